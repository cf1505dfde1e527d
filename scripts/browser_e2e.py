"""The dashboard in a real browser: headless Chromium driven through WebDriver.

Started by scripts/browser-e2e.sh, which installs Chromium, its driver and Selenium first.
Runs `clusterctl up --nodes 3` (redis-server, three nodes, cluster-lb with an admin token, all
on free loopback ports), opens the dashboard URL it printed and checks what a person would see:

1. three backend cards, all up, and "my session" showing the page's user and its counter;
2. "kill node2" clicked: its card turns down within 2 s, the action is marked on the charts,
   "my session" keeps the same user and the counter keeps counting, answered by the others;
3. "restart node2" clicked: its card is up again;
4. "kill Redis" clicked: every card down, panic mode shown, "my session" gets 503s; "restart
   Redis" clicked: the cards up and "my session" working again;
5. the balancer restarted on the same ports (SIGTERM, then started again with the same
   arguments and environment): the event stream reconnects by itself, the cards are live again.

A screenshot of each step goes to target/browser-e2e/ (the artifacts). Every process it starts
is stopped on every exit path (clusterctl stops its own children). Exit status 0 only if every
check passed.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARIES = os.path.join(ROOT, "target", "debug")
ARTIFACTS = os.path.join(ROOT, "target", "browser-e2e")

processes = {}


def say(message):
    print(f"browser-e2e: {message}", flush=True)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(name, sig=signal.SIGTERM):
    process = processes.pop(name, None)
    if process is not None and process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(what, limit, check, every=0.05):
    """Polls `check` until it returns something truthy; fails after `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {limit} s: {what}")
        time.sleep(every)


def start_cluster(log_dir):
    """`clusterctl up`; returns what it printed, label by label."""
    printed = os.path.join(log_dir, "clusterctl.out")
    with open(printed, "wb") as out, open(os.path.join(log_dir, "clusterctl.err"), "wb") as err:
        processes["clusterctl"] = subprocess.Popen(
            [os.path.join(BINARIES, "clusterctl"), "up", "--nodes", "3",
             "--lb-port", str(free_port()), "--bin-dir", BINARIES],
            stdout=out, stderr=err, start_new_session=True)

    def ready():
        if processes["clusterctl"].poll() is not None:
            raise AssertionError(f"clusterctl up exited; see {log_dir}")
        with open(printed) as text:
            content = text.read()
        return "Ctrl-C stops everything" in content and content
    lines = wait_for("clusterctl up is ready", 60, ready, every=0.2).splitlines()
    labels = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and line.startswith("  "):
            labels[parts[0]] = parts[1]
    return labels


def restart_lb():
    """SIGTERM the balancer clusterctl started, then start it again as it was, as our child."""
    parent = processes["clusterctl"].pid
    children = subprocess.run(["pgrep", "-P", str(parent), "-x", "cluster-lb"],
                              capture_output=True, text=True).stdout.split()
    assert len(children) == 1, f"cluster-lb among clusterctl's children: {children}"
    pid = int(children[0])
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = [a.decode() for a in f.read().split(b"\0") if a]
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(e.decode().split("=", 1) for e in f.read().split(b"\0") if b"=" in e)
    os.kill(pid, signal.SIGTERM)
    wait_for("the balancer stops", 10, lambda: not os.path.exists(f"/proc/{pid}/cmdline")
             or open(f"/proc/{pid}/cmdline", "rb").read() == b"")
    processes["cluster-lb"] = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL, start_new_session=True)


def main():
    os.makedirs(ARTIFACTS, exist_ok=True)
    log_dir = tempfile.mkdtemp(prefix="browser-e2e-")
    labels = start_cluster(log_dir)
    nodes = {name: labels[name].removeprefix("http://") for name in ("node1", "node2", "node3")}
    say(f"cluster up: dashboard at {labels['dashboard'].split('?')[0]}")

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1000,720"):
        options.add_argument(argument)
    try:
        browser = webdriver.Chrome(options=options,
                                   service=Service(executable_path="/usr/bin/chromedriver"))
    except Exception as error:  # the reason Chromium cannot start is the test's answer
        raise AssertionError(f"Chromium cannot start: {error}") from error
    try:
        run_steps(browser, labels["dashboard"], nodes)
    finally:
        browser.quit()


def run_steps(browser, dashboard, nodes):
    def shot(name):
        path = os.path.join(ARTIFACTS, f"{name}.png")
        browser.save_screenshot(path)
        say(f"screenshot {path}")

    def card_state(address):
        cards = browser.find_elements(By.CSS_SELECTOR, f'[data-backend="{address}"]')
        return cards[0].get_attribute("data-state") if cards else None

    def text(element_id):
        return browser.find_element(By.ID, element_id).text

    def counter():
        value = text("session-counter")
        return int(value) if value.isdigit() else None

    def click(action):
        browser.find_element(By.CSS_SELECTOR, f'button[data-action="{action}"]').click()

    browser.get(dashboard)

    # 1. Three cards up; my session logged in and counting; the controls shown.
    wait_for("three backend cards up", 10, lambda: all(
        card_state(address) == "up" for address in nodes.values()))
    user = wait_for("my session shows its user", 10,
                    lambda: re.fullmatch(r"learner-\w+", text("session-user")) and
                    text("session-user"))
    first = wait_for("the counter counts", 10, lambda: (counter() or 0) >= 6 and counter())
    wait_for("the controls are shown", 5, lambda: browser.find_elements(
        By.CSS_SELECTOR, 'button[data-action="nodes/node2/kill"]'))
    say(f"3 cards up; my session: {user}, counter {first}, node {text('session-node')}")
    shot("1-cluster-up")

    # 2. Kill node2 from the page: its card is down within 2 s; the session survives.
    victim = "node2"
    click(f"nodes/{victim}/kill")
    killed = time.monotonic()
    wait_for("the killed node's card is down", 2, lambda: card_state(nodes[victim]) == "down",
             every=0.02)
    say(f"{victim}'s card down {time.monotonic() - killed:.2f} s after the click")
    wait_for("the kill is marked on the charts", 2, lambda: browser.find_elements(
        By.CSS_SELECTOR, f'[data-backend="{nodes["node1"]}"] line.marker'))
    before = counter()
    served_by = set()

    def counted_on_by_others():
        served_by.add(text("session-node"))
        current = counter()
        return current is not None and current >= before + 6
    wait_for("the counter keeps counting", 10, counted_on_by_others)
    assert text("session-user") == user, f"the session changed user: {text('session-user')}"
    served_by.discard(victim)
    assert served_by and served_by <= {"node1", "node3"}, f"answered by {served_by}"
    say(f"counter {before} -> {counter()}, same user, answered by {sorted(served_by)}")
    shot("2-node-killed")

    # 3. Restart node2 from the page: its card is up again.
    click(f"nodes/{victim}/restart")
    wait_for("the restarted node's card is up", 15, lambda: card_state(nodes[victim]) == "up")
    say(f"{victim} up again")
    shot("3-node-restarted")

    # 4. Kill Redis from the page: every node turns unready (down), the balancer goes into panic
    #    mode and my session gets 503s; restart it: the cards are up and my session works again
    #    (a new session: this Redis keeps nothing on disk).
    click("redis/kill")
    wait_for("the cards are down without Redis", 5, lambda: all(
        card_state(address) == "down" for address in nodes.values()))
    wait_for("my session sees the 503s", 5, lambda: "503" in text("session-status"))
    wait_for("panic mode is shown", 5, lambda: text("total-panic").startswith("ON"))
    say(f"Redis killed: 3 cards down, panic mode {text('total-panic')}, "
        f"my session: {text('session-status')}")
    shot("4-redis-killed")
    click("redis/restart")
    wait_for("the cards are up with Redis back", 15, lambda: all(
        card_state(address) == "up" for address in nodes.values()))
    wait_for("my session works again", 10, lambda: text("session-status") == "ok" and
             text("session-user") == user)
    say("Redis restarted: 3 cards up, my session logged in again")

    # 5. Restart the balancer: the page's event stream reconnects by itself.
    restart_lb()
    wait_for("the stream is live again", 15, lambda: browser.find_element(
        By.ID, "link").get_attribute("data-reconnects") == "1" and all(
        card_state(address) == "up" for address in nodes.values()))
    say(f"event stream reconnected after the balancer restarted: {text('link')}")
    shot("5-lb-restarted")


if __name__ == "__main__":
    try:
        main()
    except Exception as failure:  # any failure, reported in one line
        say(f"FAIL: {failure}")
        sys.exit(1)
    finally:
        for name in list(processes):
            stop(name)
    say("passed")

"""The dashboard in a real browser: headless Chromium driven through WebDriver.

Started by scripts/browser-e2e.sh, which installs Chromium, its driver and Selenium first.
Starts its own cluster on free loopback ports (redis-server, three cluster-app nodes,
cluster-lb with an admin token), opens /dashboard and checks what a person would see:

1. three backend cards, all up, and "my session" showing the page's user and its counter;
2. a node killed (SIGKILL): its card turns down within 2 s, "my session" keeps the same user
   and the counter keeps counting, answered by the other nodes;
3. the node restarted: its card is up again;
4. the balancer restarted on the same ports: the event stream reconnects by itself and the
   cards are live again.

A screenshot of each step goes to target/browser-e2e/ (the artifacts). Every process it starts
is stopped on every exit path. Exit status 0 only if every check passed.
"""

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

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


def start(name, argv, env, log_dir):
    log = open(os.path.join(log_dir, f"{name}.log"), "ab")
    processes[name] = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(name, sig=signal.SIGKILL):
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


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def main():
    os.makedirs(ARTIFACTS, exist_ok=True)
    log_dir = tempfile.mkdtemp(prefix="browser-e2e-")
    redis_port, lb_port, admin_port = free_port(), free_port(), free_port()
    node_ports = {f"node{i}": free_port() for i in (1, 2, 3)}
    token = secrets.token_hex(16)
    node_env = {
        "SESSION_KEY": secrets.token_hex(64),
        "COOKIE_SECURE": "false",
        "SESSION_STORE": "redis",
    }

    def start_node(name):
        start(name, [
            os.path.join(BINARIES, "cluster-app"), "--node-id", name,
            "--listen-addr", f"127.0.0.1:{node_ports[name]}",
            "--redis-url", f"redis://127.0.0.1:{redis_port}",
            "--drain-ms", "200", "--redis-timeout-ms", "500", "--workers", "1",
        ], node_env, log_dir)

    def start_lb():
        argv = [
            os.path.join(BINARIES, "cluster-lb"),
            "--listen", f"127.0.0.1:{lb_port}", "--admin-listen", f"127.0.0.1:{admin_port}",
            "--health-interval-ms", "250", "--health-fall", "3", "--health-rise", "2",
            "--workers", "1",
        ]
        for port in node_ports.values():
            argv += ["--backend", f"127.0.0.1:{port}"]
        start("cluster-lb", argv, {"LB_ADMIN_TOKEN": token}, log_dir)
        wait_for("the balancer answers", 10,
                 lambda: answers(f"http://127.0.0.1:{admin_port}/healthz"))

    start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no"], {}, log_dir)
    wait_for("redis answers", 10, lambda: subprocess.run(
        ["redis-cli", "-p", str(redis_port), "ping"], capture_output=True).stdout == b"PONG\n")
    for name in node_ports:
        start_node(name)
    for name, port in node_ports.items():
        wait_for(f"{name} is ready", 20, lambda: answers(f"http://127.0.0.1:{port}/readyz"))
    start_lb()
    say(f"cluster up (logs in {log_dir})")

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1000,640"):
        options.add_argument(argument)
    try:
        browser = webdriver.Chrome(options=options,
                                   service=Service(executable_path="/usr/bin/chromedriver"))
    except Exception as error:  # the reason Chromium cannot start is the test's answer
        raise AssertionError(f"Chromium cannot start: {error}") from error
    try:
        run_steps(browser, token, admin_port, node_ports, start_node, start_lb)
    finally:
        browser.quit()


def run_steps(browser, token, admin_port, node_ports, start_node, start_lb):
    def shot(name):
        path = os.path.join(ARTIFACTS, f"{name}.png")
        browser.save_screenshot(path)
        say(f"screenshot {path}")

    def card_state(port):
        cards = browser.find_elements(By.CSS_SELECTOR, f'[data-backend="127.0.0.1:{port}"]')
        return cards[0].get_attribute("data-state") if cards else None

    def text(element_id):
        return browser.find_element(By.ID, element_id).text

    def counter():
        value = text("session-counter")
        return int(value) if value.isdigit() else None

    browser.get(f"http://127.0.0.1:{admin_port}/dashboard?token={token}")

    # 1. Three cards up; my session logged in and counting.
    wait_for("three backend cards up", 10, lambda: all(
        card_state(port) == "up" for port in node_ports.values()))
    user = wait_for("my session shows its user", 10,
                    lambda: re.fullmatch(r"learner-\w+", text("session-user")) and
                    text("session-user"))
    first = wait_for("the counter counts", 10, lambda: (counter() or 0) >= 6 and counter())
    say(f"3 cards up; my session: {user}, counter {first}, node {text('session-node')}")
    shot("1-cluster-up")

    # 2. Kill node2: its card is down within 2 s; the session survives on the others.
    victim = "node2"
    stop(victim)
    killed = time.monotonic()
    wait_for("the killed node's card is down", 2, lambda: card_state(node_ports[victim]) == "down",
             every=0.02)
    say(f"{victim}'s card down {time.monotonic() - killed:.2f} s after the kill")
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

    # 3. Restart node2: its card is up again.
    start_node(victim)
    wait_for("the restarted node's card is up", 15,
             lambda: card_state(node_ports[victim]) == "up")
    say(f"{victim} up again")
    shot("3-node-restarted")

    # 4. Restart the balancer: the page's event stream reconnects by itself.
    stop("cluster-lb", signal.SIGTERM)
    wait_for("the page sees the stream lost", 5, lambda: text("link") == "reconnecting")
    start_lb()
    wait_for("the stream is live again", 10, lambda: text("link") == "live")
    wait_for("the cards are up after the balancer's restart", 10, lambda: all(
        card_state(port) == "up" for port in node_ports.values()))
    say("event stream reconnected after the balancer restarted")
    shot("4-lb-restarted")


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

-- wrk script for scripts/bench-node.sh: send POST instead of GET.
-- The session cookie comes from the command line (-H "Cookie: ...").
wrk.method = "POST"

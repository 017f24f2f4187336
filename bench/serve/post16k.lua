-- wrk script for (e): every request a POST of a 16 KiB body
wrk.method = "POST"
wrk.body = string.rep("x", 16384)
wrk.headers["Content-Type"] = "application/octet-stream"

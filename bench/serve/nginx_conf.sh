#!/usr/bin/env bash
# Prints an nginx config for bench/serve.sh: one worker, not a daemon, everything under
# PREFIX, listening on 127.0.0.1:PORT.
#   nginx_conf.sh WORKLOAD PORT PREFIX [UPSTREAM_PORT]
# WORKLOAD a-e, g: ngx_lua (content_by_lua_block) does the work; (d) asks the upstream
# through ngx.location.capture and nginx's own proxy (HTTP/1.1, keep-alive pool).
# WORKLOAD upstream: the small static response (d) fetches, with no Lua.
set -euo pipefail
workload=$1 port=$2 prefix=$3 upstream_port=${4:-}
mods=/usr/lib/nginx/modules
if [ "$workload" != upstream ]; then
  echo "load_module $mods/ndk_http_module.so;"
  echo "load_module $mods/ngx_http_lua_module.so;"
fi
cat <<CONF
worker_processes 1;
daemon off;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_temp_path $prefix/body;
  client_body_buffer_size 64k;
  proxy_temp_path $prefix/proxy;
  fastcgi_temp_path $prefix/fastcgi;
  uwsgi_temp_path $prefix/uwsgi;
  scgi_temp_path $prefix/scgi;
CONF
case $workload in
  upstream)
    cat <<CONF
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / { default_type text/plain; return 200 'upstream says hello'; }
  }
}
CONF
    exit 0 ;;
  a|g) lua='ngx.header["Content-Type"] = "text/plain"; ngx.header["Content-Length"] = 13; ngx.print("Hello, World!")' ;;
  b) lua='local body = cjson.encode({message = "Hello, World!"}); ngx.header["Content-Type"] = "application/json"; ngx.header["Content-Length"] = #body; ngx.print(body)' ;;
  c) lua='ngx.sleep(0.01); ngx.header["Content-Type"] = "text/plain"; ngx.header["Content-Length"] = 13; ngx.print("Hello, World!")' ;;
  d) lua='local res = ngx.location.capture("/_upstream"); ngx.header["Content-Type"] = "text/plain"; ngx.header["Content-Length"] = #res.body; ngx.print(res.body)' ;;
  e) lua='ngx.req.read_body(); local body = ngx.req.get_body_data() or ""; local n = tostring(#body); ngx.header["Content-Type"] = "text/plain"; ngx.header["Content-Length"] = #n; ngx.print(n)' ;;
  *) echo "nginx_conf.sh: no workload $workload" >&2; exit 2 ;;
esac
cat <<CONF
  lua_package_cpath "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";
  init_by_lua_block { cjson = require "cjson" }
CONF
if [ "$workload" = d ]; then
  echo "  upstream up { server 127.0.0.1:$upstream_port; keepalive 256; }"
fi
cat <<CONF
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / { content_by_lua_block { $lua } }
CONF
if [ "$workload" = d ]; then
  cat <<CONF
    location = /_upstream {
      internal;
      proxy_pass http://up/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
CONF
fi
echo "  }"
echo "}"

# Shared by the proxy benchmarks (proxy.sh, cpu.sh, callgrind.sh); sourced, not run.
# Gives: $work (a temporary folder, removed on exit unless KEEP is set), pids (processes
# killed on exit), nginx_conf, nginx_instance, start_upstream, start_nginx_proxy,
# nginx_proxy_servers, nginx_workers and write_pbxgate_config.

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# nginx_conf NAME WORKERS SERVER_BLOCKS [MAIN]: $work/NAME/nginx.conf for an nginx of its own
# (pid file and temp folders under $work/NAME, no access log); MAIN adds main-context lines.
nginx_conf() {
  local name=$1 workers=$2 servers=$3 main=${4:-} dir="$work/$1"
  mkdir -p "$dir"
  cat > "$dir/nginx.conf" <<NGINX
$main
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections ${NGINX_WORKER_CONNECTIONS:-4096}; }
http {
  access_log off;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fcgi; uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  keepalive_requests 1000000;
  $servers
}
NGINX
}

# nginx_instance NAME WORKERS SERVER_BLOCKS: starts an nginx of its own (master, workers).
nginx_instance() {
  nginx_conf "$@"
  "$NGINX" -c "$work/$1/nginx.conf" -g 'daemon off;' &
  pids+=($!)
}

# start_upstream WORKERS PORT: the stand-in for 3CX, answering a small page from memory.
start_upstream() {
  nginx_instance upstream "$1" "server {
    listen 127.0.0.1:$2;
    location / { default_type text/plain; return 200 \"3CX says hello. 3CX says hello. 3CX says hello.\\n\"; }
  }"
}

# start_nginx_proxy WORKERS PORT UPSTREAM_PORT: the baseline, nginx as a plain reverse proxy
# with a keep-alive upstream pool. Its own instance: were it the upstream's too, a worker
# could proxy a request and answer it itself without a switch between processes, which no
# proxy in front of a real 3CX can.
start_nginx_proxy() { nginx_instance proxy "$1" "$(nginx_proxy_servers "$2" "$3")"; }

# nginx_proxy_servers PORT UPSTREAM_PORT: the baseline's configuration (server blocks).
nginx_proxy_servers() {
  echo "upstream pbx { server 127.0.0.1:$2; keepalive 256; }
  server {
    listen 127.0.0.1:$1;
    location / {
      proxy_pass http://pbx;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host \$proxy_host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }"
}

# nginx_workers NAME: the worker processes of an instance.
nginx_workers() { pgrep -P "$(cat "$work/$1/nginx.pid")" | tr '\n' ' '; }

# write_pbxgate_config LISTEN_PORT UPSTREAM_PORT: $work/pbxgate.toml for a gateway in front
# of the nginx upstream, on an SQLite store in $work.
write_pbxgate_config() {
  cat > "$work/pbxgate.toml" <<TOML
[server]
listen = "127.0.0.1:$1"
public_url = "http://localhost:$1"
[entra]
tenant_id = "00000000-0000-0000-0000-000000000000"
client_id = "bench"
client_secret = "bench"
[pbx]
url = "http://127.0.0.1:$2"
client_id = "bench"
client_secret = "bench"
service_extension = "999"
service_password = "bench"
[store]
url = "sqlite://$work/pbxgate.db"
[log]
level = "warn"
TOML
}

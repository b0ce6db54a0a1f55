# Shared by the proxy benchmarks (proxy.sh, cpu.sh, callgrind.sh); sourced, not run.
# Gives: $work (a temporary folder, removed on exit unless KEEP is set), pids (processes
# killed on exit), start_nginx and write_pbxgate_config.

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# start_nginx WORKERS UPSTREAM_PORT [PROXY_PORT]
# nginx on loopback: the upstream (a stand-in for 3CX answering a small page from memory) on
# UPSTREAM_PORT and, with PROXY_PORT, the baseline reverse proxy in front of it with a
# keep-alive upstream pool and no access log.
start_nginx() {
  local workers=$1 upstream=$2 proxy=${3:-}
  local proxy_server=""
  if [ -n "$proxy" ]; then
    proxy_server="upstream pbx { server 127.0.0.1:$upstream; keepalive 256; }
  server {
    listen 127.0.0.1:$proxy;
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
  fi
  cat > "$work/nginx.conf" <<NGINX
worker_processes $workers;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/body; proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fcgi; uwsgi_temp_path $work/uwsgi; scgi_temp_path $work/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$upstream;
    location / { default_type text/plain; return 200 "3CX says hello. 3CX says hello. 3CX says hello.\n"; }
  }
  $proxy_server
}
NGINX
  "$NGINX" -c "$work/nginx.conf" -g 'daemon off;' &
  pids+=($!)
}

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
[store]
url = "sqlite://$work/pbxgate.db"
[log]
level = "warn"
TOML
}

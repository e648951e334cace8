#!/bin/sh
# The DaemonSet's install-cni init container: puts the l3net-cni plugin, its network configuration,
# the etcd TLS files it names and a kubeconfig for reading pods where the container runtime and the
# plugin (run by the runtime on the host) find them. Idempotent: every file is written to a temporary
# name and renamed, so a runtime never reads half a file.
set -eu
BIN_DIR=${CNI_BIN_DIR:-/host/opt/cni/bin}
NET_DIR=${CNI_NET_DIR:-/host/etc/cni/net.d}
LIB_DIR=${L3NET_HOST_LIB_DIR:-/host/opt/l3net}
HOST_TLS_DIR=${L3NET_HOST_TLS_DIR:-/host/etc/l3net/etcd}
CONF_NAME=${CNI_CONF_NAME:-10-l3net.conflist}
SA_DIR=/var/run/secrets/kubernetes.io/serviceaccount
mkdir -p "$BIN_DIR" "$NET_DIR" "$LIB_DIR"

# The plugin's code, runnable by the host's python3. The shim runs with -S (no site module: its start is
# on every pod's ADD path and it is stdlib-only; PYTHONPATH still finds the fallback plugin's packages).
rm -rf "$LIB_DIR/site-packages.new"
cp -a /opt/l3net/venv/lib/python3*/site-packages "$LIB_DIR/site-packages.new"
rm -rf "$LIB_DIR/site-packages" && mv "$LIB_DIR/site-packages.new" "$LIB_DIR/site-packages"

cat > "$BIN_DIR/.l3net-cni.tmp" <<SHIM
#!/bin/sh
PYTHONPATH=/opt/l3net/site-packages exec python3 -S -c 'import sys; from l3net.cni.shim import main; sys.exit(main())' "\$@"
SHIM
chmod 0755 "$BIN_DIR/.l3net-cni.tmp"
mv "$BIN_DIR/.l3net-cni.tmp" "$BIN_DIR/l3net-cni"

# etcd TLS: the Secret is mounted at /etc/l3net/etcd in this container; the plugin runs on the host
# (when the agent is not serving it), so the files named in the conflist must exist there too.
for var in L3NET_ETCD_CA_CERT_FILE L3NET_ETCD_CERT_FILE L3NET_ETCD_KEY_FILE; do
  eval "path=\${$var:-}"
  if [ -n "$path" ]; then
    [ -f "$path" ] || { echo "install-cni: $var=$path but the file is missing (is the Secret l3net-etcd-certs there?)" >&2; exit 1; }
    mkdir -p "$HOST_TLS_DIR"
    cp "$path" "$HOST_TLS_DIR/.$(basename "$path").tmp"
    chmod 0600 "$HOST_TLS_DIR/.$(basename "$path").tmp"
    mv "$HOST_TLS_DIR/.$(basename "$path").tmp" "$HOST_TLS_DIR/$(basename "$path")"
  fi
done

# A kubeconfig for the plugin's pod read (CNI ADD), with this pod's service account (RBAC: get pods and
# serviceaccounts). The token is projected and rotates: the agent re-runs this init container on restart.
if [ -f "$SA_DIR/token" ]; then
  umask 077
  cat > "$NET_DIR/.l3net-kubeconfig.tmp" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}
    certificate-authority-data: $(base64 -w0 < "$SA_DIR/ca.crt")
users:
- name: l3net-cni
  user:
    token: $(cat "$SA_DIR/token")
contexts:
- name: l3net
  context: {cluster: local, user: l3net-cni}
current-context: l3net
KCFG
  mv "$NET_DIR/.l3net-kubeconfig.tmp" "$NET_DIR/l3net-kubeconfig"
fi

# The conflist from the ConfigMap, with this node's name, the etcd endpoints, prefix and TLS files.
sed -e "s|__KUBERNETES_NODE_NAME__|${KUBERNETES_NODE_NAME}|g" \
    -e "s|__ETCD_ENDPOINTS__|${L3NET_ETCD_ENDPOINTS}|g" \
    -e "s|__ETCD_PREFIX__|${L3NET_ETCD_PREFIX:-/l3net/v1/}|g" \
    -e "s|__ETCD_CA_CERT_FILE__|${L3NET_ETCD_CA_CERT_FILE:-}|g" \
    -e "s|__ETCD_CERT_FILE__|${L3NET_ETCD_CERT_FILE:-}|g" \
    -e "s|__ETCD_KEY_FILE__|${L3NET_ETCD_KEY_FILE:-}|g" \
    /etc/l3net/cni_network_config > "$NET_DIR/.$CONF_NAME.tmp"
mv "$NET_DIR/.$CONF_NAME.tmp" "$NET_DIR/$CONF_NAME"
echo "install-cni: $BIN_DIR/l3net-cni, $NET_DIR/$CONF_NAME and $NET_DIR/l3net-kubeconfig installed"

#!/bin/sh
# The DaemonSet's install-cni init container: puts the l3net-cni plugin and its network
# configuration where the container runtime looks (hostPath /opt/cni/bin and /etc/cni/net.d).
# Idempotent: files are written to a temporary name and renamed, so a runtime never reads half a file.
set -eu
BIN_DIR=${CNI_BIN_DIR:-/host/opt/cni/bin}
NET_DIR=${CNI_NET_DIR:-/host/etc/cni/net.d}
LIB_DIR=${L3NET_HOST_LIB_DIR:-/host/opt/l3net}
CONF_NAME=${CNI_CONF_NAME:-10-l3net.conflist}
mkdir -p "$BIN_DIR" "$NET_DIR" "$LIB_DIR"

# The plugin's code, runnable by the host's python3.
rm -rf "$LIB_DIR/site-packages.new"
cp -a /opt/l3net/venv/lib/python3*/site-packages "$LIB_DIR/site-packages.new"
rm -rf "$LIB_DIR/site-packages" && mv "$LIB_DIR/site-packages.new" "$LIB_DIR/site-packages"

cat > "$BIN_DIR/.l3net-cni.tmp" <<SHIM
#!/bin/sh
PYTHONPATH=/opt/l3net/site-packages exec python3 -c 'import sys; from l3net.cni.shim import main; sys.exit(main())' "\$@"
SHIM
chmod 0755 "$BIN_DIR/.l3net-cni.tmp"
mv "$BIN_DIR/.l3net-cni.tmp" "$BIN_DIR/l3net-cni"

# The conflist from the ConfigMap, with this node's name and the etcd endpoints filled in.
sed -e "s|__KUBERNETES_NODE_NAME__|${KUBERNETES_NODE_NAME}|g" \
    -e "s|__ETCD_ENDPOINTS__|${L3NET_ETCD_ENDPOINTS}|g" \
    /etc/l3net/cni_network_config > "$NET_DIR/.$CONF_NAME.tmp"
mv "$NET_DIR/.$CONF_NAME.tmp" "$NET_DIR/$CONF_NAME"
echo "install-cni: $BIN_DIR/l3net-cni and $NET_DIR/$CONF_NAME installed"

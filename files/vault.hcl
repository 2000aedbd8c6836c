# Vault on managers, stored in the cluster's etcd (v3 API).
storage "etcd" {
  address  = "http://127.0.0.1:2379"
  etcd_api = "v3"
  path     = "vault/"
  ha_enabled = "true"
}
listener "tcp" {
  address     = "0.0.0.0:8200"
  tls_disable = 1
}
ui = true

// Wrapper module: etcd's own server/go.mod keeps relative replaces, so
// `go install go.etcd.io/etcd/server/v3@version` is refused. Building it as a
// dependency of this module avoids that. Kept apart from k8sbin so etcd's
// grpc/otel pins do not mix into the Kubernetes build.
module local/etcdbin

go 1.26.0

require go.etcd.io/etcd/server/v3 v3.6.10

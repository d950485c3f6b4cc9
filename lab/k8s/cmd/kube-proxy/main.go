// Command kube-proxy is upstream's kube-proxy, built from the
// k8s.io/kubernetes module for the kvip lab: one per lab node, in the
// node's network namespace.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	os.Exit(cli.Run(app.NewProxyCommand()))
}

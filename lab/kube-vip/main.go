// Command kube-vip is the released kube-vip, built from its Go module for
// the benchmark (`kvip-lab bench`), so both daemons run in the same lab.
package main

import "github.com/kube-vip/kube-vip/cmd"

func main() {
	cmd.Release.Version = "v1.0.0"
	cmd.Execute()
}

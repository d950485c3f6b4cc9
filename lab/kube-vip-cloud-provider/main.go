// Command kube-vip-cloud-provider is the released kube-vip-cloud-provider,
// built from its Go module as the oracle of the lab's IPAM tests
// (lab/tests/ipam_e2e.rs): the allocations kvip's built-in pools must match.
// The release's own main package cannot be imported, so this one wires the
// same pieces: importing the provider package registers the `kubevip`
// cloud, and the cloud controller manager runs its service (load-balancer)
// controller and nothing else.
package main

import (
	goflag "flag"
	"os"

	"github.com/kube-vip/kube-vip-cloud-provider/pkg/provider"
	"k8s.io/apimachinery/pkg/util/wait"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	"k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/logs"
	klogv1 "k8s.io/klog"
	"k8s.io/klog/v2"
)

// Flags the release sets before parsing the command line, so the same
// command line runs either binary.
var releaseFlags = map[string]string{
	"cloud-provider":             provider.ProviderName,
	"allow-untagged-cloud":       "true",
	"authentication-skip-lookup": "true",
}

func main() {
	logs.InitLogs()
	defer logs.FlushLogs()
	providerLogsToStderr()

	opts, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		klog.Fatalf("cloud controller manager options: %v", err)
	}
	onlyServices := map[string]app.ControllerInitFuncConstructor{
		names.ServiceLBController: app.DefaultInitFuncConstructors[names.ServiceLBController],
	}
	command := app.NewCloudControllerManagerCommand(opts, kubevipCloud, onlyServices,
		names.CCMControllerAliases(), cliflag.NamedFlagSets{}, wait.NeverStop)
	command.Flags().BoolVar(&provider.OutSideCluster, "OutSideCluster", false,
		"the provider reads $HOME/.kube/config instead of the in-cluster credentials")
	for name, value := range releaseFlags {
		if err := command.Flags().Set(name, value); err != nil {
			klog.Fatalf("setting --%s: %v", name, err)
		}
	}
	if err := command.Execute(); err != nil {
		os.Exit(1)
	}
}

// kubevipCloud is the provider the import above registered.
func kubevipCloud(*config.CompletedConfig) cloudprovider.Interface {
	cloud, err := cloudprovider.InitCloudProvider(provider.ProviderName, "")
	if err != nil || cloud == nil {
		klog.Fatalf("the %s cloud provider did not start: %v", provider.ProviderName, err)
	}
	return cloud
}

// providerLogsToStderr sends the provider's own lines (which address went
// to which Service) to standard error with the rest: it logs through klog
// v1, whose default without flags is files in the temporary folder.
func providerLogsToStderr() {
	flags := goflag.NewFlagSet("klog-v1", goflag.ContinueOnError)
	klogv1.InitFlags(flags)
	if err := flags.Set("logtostderr", "true"); err != nil {
		klog.Fatalf("klog v1: %v", err)
	}
}

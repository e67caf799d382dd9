// Command kstatus prints the status that kstatus (sigs.k8s.io/cli-utils, the
// library Flux and kpt use to judge health) computes for Kubernetes objects.
// It reads JSON objects from stdin, one after another, and prints one line
// "<status>\t<message>" per object, e.g. "Current\tResource is current".
// The tests use it to check TestInstallation's conditions against the real
// library (see tests/gitops.rs); hack/kstatus/build.sh builds and caches it.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	decoder := json.NewDecoder(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for decoder.More() {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: reading an object: %v\n", err)
			os.Exit(2)
		}
		// Unstructured's own decoder keeps integers int64, as kstatus expects.
		object := &unstructured.Unstructured{}
		if err := object.UnmarshalJSON(raw); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: decoding an object: %v\n", err)
			os.Exit(2)
		}
		result, err := status.Compute(object)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: computing the status: %v\n", err)
			os.Exit(1)
		}
		fmt.Fprintf(out, "%s\t%s\n", result.Status, result.Message)
	}
}

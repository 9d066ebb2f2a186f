// Command health tells what the GitOps tools would read from objects: kstatus's status (Flux's
// health checks) and, given an Argo CD health-check script, Argo CD's health. Built
// by e2e/cluster/build from the Go module proxy, so the tests judge health with those tools'
// own code rather than with our reading of our conditions.
//
//	health [-argocd SCRIPT.lua] < objects.json
//
// Standard input holds a JSON list of objects; standard output one JSON line per object:
// {"name": ..., "kstatus": "Current|InProgress|Failed|...", "kstatusMessage": ...,
// "argocd": "Healthy|Progressing|Degraded|...", "argocdMessage": ...}.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sjson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Name           string `json:"name"`
	Kind           string `json:"kind"`
	KStatus        string `json:"kstatus"`
	KStatusMessage string `json:"kstatusMessage"`
	ArgoCD         string `json:"argocd,omitempty"`
	ArgoCDMessage  string `json:"argocdMessage,omitempty"`
}

func main() {
	argocd := flag.String("argocd", "", "an Argo CD health-check script (Lua) to run on every object")
	flag.Parse()
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading objects: %v", err)
	}
	// Kubernetes' own JSON decoding: whole numbers become int64, as kstatus expects.
	var objects []map[string]interface{}
	if err := k8sjson.Unmarshal(input, &objects); err != nil {
		fail("reading objects: %v", err)
	}
	out := json.NewEncoder(os.Stdout)
	for _, object := range objects {
		u := &unstructured.Unstructured{Object: object}
		result, err := status.Compute(u)
		if err != nil {
			fail("kstatus of %s: %v", u.GetName(), err)
		}
		v := verdict{Name: u.GetName(), Kind: u.GetKind(), KStatus: result.Status.String(), KStatusMessage: result.Message}
		if *argocd != "" {
			v.ArgoCD, v.ArgoCDMessage = argoHealth(*argocd, object)
		}
		if err := out.Encode(v); err != nil {
			fail("writing: %v", err)
		}
	}
}

// argoHealth runs a health script the way Argo CD does: gopher-lua, the object as the global
// `obj`, and a returned table with `status` and `message`.
func argoHealth(script string, object map[string]interface{}) (string, string) {
	source, err := os.ReadFile(script)
	if err != nil {
		fail("reading %s: %v", script, err)
	}
	state := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer state.Close()
	for _, open := range []struct {
		name string
		fn   lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		state.Push(state.NewFunction(open.fn))
		state.Push(lua.LString(open.name))
		state.Call(1, 0)
	}
	state.SetGlobal("obj", toLua(state, object))
	if err := state.DoString(string(source)); err != nil {
		fail("running %s: %v", script, err)
	}
	table, ok := state.Get(-1).(*lua.LTable)
	if !ok {
		fail("%s returned no table", script)
	}
	return lua.LVAsString(table.RawGetString("status")), lua.LVAsString(table.RawGetString("message"))
}

func toLua(state *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case map[string]interface{}:
		table := state.NewTable()
		for key, child := range v {
			table.RawSetString(key, toLua(state, child))
		}
		return table
	case []interface{}:
		table := state.NewTable()
		for _, child := range v {
			table.Append(toLua(state, child))
		}
		return table
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case nil:
		return lua.LNil
	default:
		return lua.LString(strings.TrimSpace(fmt.Sprint(v)))
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "health: "+format+"\n", args...)
	os.Exit(1)
}

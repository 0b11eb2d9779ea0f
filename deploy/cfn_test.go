package deploy

// A small CloudFormation evaluator for the template tests.
//
// goformation parses the template into typed resources, but its own intrinsic processing is not
// enough here: it resolves a Ref to a resource or a GetAtt to nothing, strips them from Fn::Sub,
// and with EvaluateConditions it replaces a resource that carries a Condition by the condition's
// value. So the test first converts the YAML's short-form tags to long form (goformation's
// intrinsics.ProcessYAML with NoProcess), then resolves everything itself for one set of
// parameter values, the way CloudFormation would, and only then hands the result to goformation:
//
//   - parameters take their Default unless overridden; a Ref to a parameter without either fails;
//   - conditions are evaluated (Fn::Equals compares values as strings, as CloudFormation does);
//     resources and outputs whose Condition is false are dropped;
//   - a Ref to a resource becomes "<Name>", Fn::GetAtt becomes "<Name.Attribute>", inside
//     Fn::Sub too, so tests can assert on ARNs built from them; a Ref or GetAtt to a resource
//     that does not exist (or was dropped by its condition) fails, as it would in CloudFormation;
//   - AWS::NoValue removes the enclosing key or list element;
//   - a Ref to a Number parameter keeps the YAML number (CloudFormation would pass a string that
//     it converts back for numeric properties; goformation needs the number).

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation"
	"github.com/awslabs/goformation/v7/intrinsics"
)

// Pseudo parameter values used by the evaluator.
const (
	testRegion    = "us-west-2"
	testAccount   = "123456789012"
	testStackName = "docdbdr"
)

// stackNameOverride, as a key of render's overrides, sets AWS::StackName (testStackName otherwise).
const stackNameOverride = "AWS::StackName"

// stack is the template resolved for one set of parameter values.
type stack struct {
	params map[string]any
	// raw is the resolved template as generic JSON values, for what goformation does not type
	// (SAM MSK events, IAM policy documents).
	raw map[string]any
	// tpl is the resolved template parsed by goformation.
	tpl *cloudformation.Template
}

// resource returns the resolved raw resource (Type, Properties, ...) or fails the test.
func (s *stack) resource(t *testing.T, name string) map[string]any {
	t.Helper()
	res, ok := s.raw["Resources"].(map[string]any)[name].(map[string]any)
	if !ok {
		t.Fatalf("resource %s is not in the template (for these parameters)", name)
	}
	return res
}

// has reports whether the resource exists for these parameters.
func (s *stack) has(name string) bool {
	_, ok := s.raw["Resources"].(map[string]any)[name]
	return ok
}

// resourcesOfType returns the logical IDs of the resolved resources of a type, sorted.
func (s *stack) resourcesOfType(typ string) []string {
	var names []string
	for name, r := range s.raw["Resources"].(map[string]any) {
		if r.(map[string]any)["Type"] == typ {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// noValue marks a value to be removed (AWS::NoValue).
type noValueType struct{}

var noValue = noValueType{}

type evaluator struct {
	stackName  string // AWS::StackName: testStackName unless overridden
	tmpl       map[string]any
	params     map[string]any
	paramTypes map[string]string
	resources  map[string]bool // resources that exist for these parameters
	conds      map[string]any  // raw condition expressions
	condCache  map[string]bool
	condStack  map[string]bool
}

var templateCache = map[string]map[string]any{}

// loadLongForm reads the template and converts short-form tags (!Ref, !Sub...) to long form.
func loadLongForm(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	js, err := intrinsics.ProcessYAML(data, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// render resolves ../template.yaml for the given parameter overrides.
func render(t *testing.T, overrides map[string]any) *stack {
	t.Helper()
	s, err := renderFile("../template.yaml", overrides)
	if err != nil {
		t.Fatalf("render template with %v: %v", overrides, err)
	}
	return s
}

func renderFile(path string, overrides map[string]any) (*stack, error) {
	if _, ok := templateCache[path]; !ok {
		m, err := loadLongForm(path)
		if err != nil {
			return nil, err
		}
		templateCache[path] = m
	}
	// Work on a deep copy: evaluation must not leak between parameter sets.
	tmpl := deepCopy(templateCache[path]).(map[string]any)

	e := &evaluator{
		tmpl:       tmpl,
		params:     map[string]any{},
		paramTypes: map[string]string{},
		resources:  map[string]bool{},
		condCache:  map[string]bool{},
		condStack:  map[string]bool{},
	}
	e.stackName = testStackName
	if name, ok := overrides[stackNameOverride].(string); ok {
		e.stackName = name
	}
	params, _ := tmpl["Parameters"].(map[string]any)
	for name := range overrides {
		if _, ok := params[name]; !ok && name != stackNameOverride {
			return nil, fmt.Errorf("override of unknown parameter %s", name)
		}
	}
	for name, p := range params {
		pm := p.(map[string]any)
		typ, _ := pm["Type"].(string)
		e.paramTypes[name] = typ
		v, ok := overrides[name]
		if !ok {
			v, ok = pm["Default"]
		}
		if !ok {
			continue // a Ref to it fails
		}
		if err := checkParam(name, pm, v); err != nil {
			return nil, err
		}
		if strings.HasPrefix(typ, "List<") || typ == "CommaDelimitedList" {
			if s, isString := v.(string); isString {
				var l []any
				for _, part := range strings.Split(s, ",") {
					l = append(l, strings.TrimSpace(part))
				}
				v = l
			}
		}
		e.params[name] = v
	}
	e.conds, _ = tmpl["Conditions"].(map[string]any)

	if err := e.rules(); err != nil {
		return nil, err
	}

	resources, _ := tmpl["Resources"].(map[string]any)
	for name, r := range resources {
		rm := r.(map[string]any)
		if c, ok := rm["Condition"].(string); ok {
			v, err := e.condition(c)
			if err != nil {
				return nil, fmt.Errorf("resource %s: %w", name, err)
			}
			if !v {
				delete(resources, name)
				continue
			}
		}
		e.resources[name] = true
	}
	for name, r := range resources {
		rm := r.(map[string]any)
		for _, dep := range dependsOn(rm["DependsOn"]) {
			if !e.resources[dep] {
				return nil, fmt.Errorf("resource %s depends on missing resource %s", name, dep)
			}
		}
		out, err := e.resolve(rm)
		if err != nil {
			return nil, fmt.Errorf("resource %s: %w", name, err)
		}
		resources[name] = out
	}
	if outputs, ok := tmpl["Outputs"].(map[string]any); ok {
		for name, o := range outputs {
			om := o.(map[string]any)
			if c, ok := om["Condition"].(string); ok {
				v, err := e.condition(c)
				if err != nil {
					return nil, fmt.Errorf("output %s: %w", name, err)
				}
				if !v {
					delete(outputs, name)
					continue
				}
			}
			out, err := e.resolve(om)
			if err != nil {
				return nil, fmt.Errorf("output %s: %w", name, err)
			}
			outputs[name] = out
		}
	}
	// Conditions are consumed; CloudFormation does not keep them in the processed template.
	delete(tmpl, "Conditions")

	js, err := json.Marshal(tmpl)
	if err != nil {
		return nil, err
	}
	tpl, err := goformation.ParseJSONWithOptions(js, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		return nil, fmt.Errorf("goformation: %w", err)
	}
	return &stack{params: e.params, raw: tmpl, tpl: tpl}, nil
}

// checkParam applies a parameter's AllowedValues, AllowedPattern and Min/MaxValue to a value.
func checkParam(name string, p map[string]any, v any) error {
	s := fmt.Sprint(v)
	if l, ok := v.([]any); ok {
		parts := make([]string, len(l))
		for i, x := range l {
			parts[i] = fmt.Sprint(x)
		}
		s = strings.Join(parts, ",")
	}
	if allowed, ok := p["AllowedValues"].([]any); ok {
		found := false
		for _, a := range allowed {
			if fmt.Sprint(a) == s {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("parameter %s: %q is not one of %v", name, s, allowed)
		}
	}
	if pat, ok := p["AllowedPattern"].(string); ok {
		if !regexp.MustCompile("^(?:" + pat + ")$").MatchString(s) {
			return fmt.Errorf("parameter %s: %q does not match %s", name, s, pat)
		}
	}
	if n, ok := v.(float64); ok {
		if lo, ok := p["MinValue"].(float64); ok && n < lo {
			return fmt.Errorf("parameter %s: %v < MinValue %v", name, n, lo)
		}
		if hi, ok := p["MaxValue"].(float64); ok && n > hi {
			return fmt.Errorf("parameter %s: %v > MaxValue %v", name, n, hi)
		}
	}
	return nil
}

// rules checks the template's Rules as CloudFormation does before creating anything: for each
// rule whose RuleCondition holds, every Assert must hold.
func (e *evaluator) rules() error {
	rules, _ := e.tmpl["Rules"].(map[string]any)
	names := make([]string, 0, len(rules))
	for name := range rules {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		r := rules[name].(map[string]any)
		if c, ok := r["RuleCondition"]; ok {
			v, err := e.resolve(c)
			if err != nil {
				return fmt.Errorf("rule %s: %w", name, err)
			}
			if v != true {
				continue
			}
		}
		for _, a := range r["Assertions"].([]any) {
			am := a.(map[string]any)
			v, err := e.resolve(am["Assert"])
			if err != nil {
				return fmt.Errorf("rule %s: %w", name, err)
			}
			if v != true {
				return fmt.Errorf("rule %s fails: %v", name, am["AssertDescription"])
			}
		}
	}
	delete(e.tmpl, "Rules")
	return nil
}

func dependsOn(v any) []string {
	switch d := v.(type) {
	case string:
		return []string{d}
	case []any:
		var out []string
		for _, x := range d {
			out = append(out, fmt.Sprint(x))
		}
		return out
	}
	return nil
}

func (e *evaluator) condition(name string) (bool, error) {
	if v, ok := e.condCache[name]; ok {
		return v, nil
	}
	expr, ok := e.conds[name]
	if !ok {
		return false, fmt.Errorf("unknown condition %s", name)
	}
	if e.condStack[name] {
		return false, fmt.Errorf("condition %s refers to itself", name)
	}
	e.condStack[name] = true
	defer delete(e.condStack, name)
	v, err := e.resolve(expr)
	if err != nil {
		return false, fmt.Errorf("condition %s: %w", name, err)
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("condition %s is not a boolean: %v", name, v)
	}
	e.condCache[name] = b
	return b, nil
}

var subVar = regexp.MustCompile(`\$\{([^}]*)\}`)

func (e *evaluator) resolve(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 1 {
			for k, arg := range x {
				if k == "Ref" || k == "Condition" || strings.HasPrefix(k, "Fn::") {
					return e.intrinsic(k, arg)
				}
			}
		}
		out := map[string]any{}
		for k, val := range x {
			r, err := e.resolve(val)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			if r != noValue {
				out[k] = r
			}
		}
		return out, nil
	case []any:
		out := []any{}
		for i, val := range x {
			r, err := e.resolve(val)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			if r != noValue {
				out = append(out, r)
			}
		}
		return out, nil
	}
	return v, nil
}

func (e *evaluator) ref(name string) (any, error) {
	switch name {
	case "AWS::NoValue":
		return noValue, nil
	case "AWS::Region":
		return testRegion, nil
	case "AWS::AccountId":
		return testAccount, nil
	case "AWS::Partition":
		return "aws", nil
	case "AWS::StackName":
		return e.stackName, nil
	case "AWS::URLSuffix":
		return "amazonaws.com", nil
	case "AWS::StackId":
		return "arn:aws:cloudformation:" + testRegion + ":" + testAccount + ":stack/" + e.stackName + "/0", nil
	}
	if _, ok := e.paramTypes[name]; ok {
		v, ok := e.params[name]
		if !ok {
			return nil, fmt.Errorf("parameter %s has no value (no Default and no override)", name)
		}
		return v, nil
	}
	if e.resources[name] {
		return "<" + name + ">", nil
	}
	return nil, fmt.Errorf("Ref to unknown or absent resource or parameter %s", name)
}

func (e *evaluator) getAtt(arg any) (any, error) {
	var parts []string
	switch a := arg.(type) {
	case string:
		parts = strings.SplitN(a, ".", 2)
	case []any:
		for _, p := range a {
			r, err := e.resolve(p)
			if err != nil {
				return nil, err
			}
			parts = append(parts, fmt.Sprint(r))
		}
	}
	if len(parts) != 2 {
		return nil, fmt.Errorf("malformed Fn::GetAtt %v", arg)
	}
	if !e.resources[parts[0]] {
		return nil, fmt.Errorf("Fn::GetAtt of unknown or absent resource %s", parts[0])
	}
	return "<" + parts[0] + "." + parts[1] + ">", nil
}

func (e *evaluator) intrinsic(fn string, arg any) (any, error) {
	switch fn {
	case "Ref":
		name, ok := arg.(string)
		if !ok {
			return nil, fmt.Errorf("Ref of %v", arg)
		}
		return e.ref(name)
	case "Condition":
		name, _ := arg.(string)
		return e.condition(name)
	case "Fn::GetAtt":
		return e.getAtt(arg)
	case "Fn::If":
		a, ok := arg.([]any)
		if !ok || len(a) != 3 {
			return nil, fmt.Errorf("malformed Fn::If %v", arg)
		}
		name, _ := a[0].(string)
		c, err := e.condition(name)
		if err != nil {
			return nil, err
		}
		if c {
			return e.resolve(a[1])
		}
		return e.resolve(a[2])
	case "Fn::Equals":
		a, err := e.resolveList(arg, 2)
		if err != nil {
			return nil, err
		}
		return fmt.Sprint(a[0]) == fmt.Sprint(a[1]), nil
	case "Fn::Not":
		a, err := e.resolveList(arg, 1)
		if err != nil {
			return nil, err
		}
		b, ok := a[0].(bool)
		if !ok {
			return nil, fmt.Errorf("Fn::Not of %v", a[0])
		}
		return !b, nil
	case "Fn::And", "Fn::Or":
		a, err := e.resolveList(arg, -1)
		if err != nil {
			return nil, err
		}
		and := fn == "Fn::And"
		result := and
		for _, x := range a {
			b, ok := x.(bool)
			if !ok {
				return nil, fmt.Errorf("%s of %v", fn, x)
			}
			if and {
				result = result && b
			} else {
				result = result || b
			}
		}
		return result, nil
	case "Fn::Join":
		a, err := e.resolveList(arg, 2)
		if err != nil {
			return nil, err
		}
		l, ok := a[1].([]any)
		if !ok {
			return nil, fmt.Errorf("Fn::Join of %v", a[1])
		}
		parts := make([]string, len(l))
		for i, x := range l {
			parts[i] = fmt.Sprint(x)
		}
		return strings.Join(parts, fmt.Sprint(a[0])), nil
	case "Fn::Split":
		a, err := e.resolveList(arg, 2)
		if err != nil {
			return nil, err
		}
		var out []any
		for _, p := range strings.Split(fmt.Sprint(a[1]), fmt.Sprint(a[0])) {
			out = append(out, p)
		}
		return out, nil
	case "Fn::Select":
		a, err := e.resolveList(arg, 2)
		if err != nil {
			return nil, err
		}
		var i int
		if _, err := fmt.Sscan(fmt.Sprint(a[0]), &i); err != nil {
			return nil, fmt.Errorf("Fn::Select index %v", a[0])
		}
		l, ok := a[1].([]any)
		if !ok || i < 0 || i >= len(l) {
			return nil, fmt.Errorf("Fn::Select %d of %v", i, a[1])
		}
		return l[i], nil
	case "Fn::Sub":
		var tmpl string
		vars := map[string]any{}
		switch a := arg.(type) {
		case string:
			tmpl = a
		case []any:
			if len(a) != 2 {
				return nil, fmt.Errorf("malformed Fn::Sub %v", arg)
			}
			tmpl, _ = a[0].(string)
			r, err := e.resolve(a[1])
			if err != nil {
				return nil, err
			}
			vars, _ = r.(map[string]any)
		default:
			return nil, fmt.Errorf("malformed Fn::Sub %v", arg)
		}
		var subErr error
		out := subVar.ReplaceAllStringFunc(tmpl, func(m string) string {
			name := m[2 : len(m)-1]
			if strings.HasPrefix(name, "!") {
				return "${" + name[1:] + "}"
			}
			if v, ok := vars[name]; ok {
				return fmt.Sprint(v)
			}
			var v any
			var err error
			if strings.Contains(name, ".") && !strings.HasPrefix(name, "AWS::") {
				v, err = e.getAtt(name)
			} else {
				v, err = e.ref(name)
			}
			if err != nil {
				subErr = err
				return ""
			}
			if _, ok := v.([]any); ok {
				subErr = fmt.Errorf("Fn::Sub of list parameter %s", name)
			}
			return fmt.Sprint(v)
		})
		if subErr != nil {
			return nil, fmt.Errorf("Fn::Sub %q: %w", tmpl, subErr)
		}
		return out, nil
	}
	return nil, fmt.Errorf("intrinsic %s is not supported by the test evaluator", fn)
}

func (e *evaluator) resolveList(arg any, n int) ([]any, error) {
	a, ok := arg.([]any)
	if !ok || (n >= 0 && len(a) != n) {
		return nil, fmt.Errorf("expected %d arguments, got %v", n, arg)
	}
	out := make([]any, len(a))
	for i, x := range a {
		r, err := e.resolve(x)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, val := range x {
			m[k] = deepCopy(val)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, val := range x {
			l[i] = deepCopy(val)
		}
		return l
	}
	return v
}

// Package results is the machine-readable record of the comparisons in bench/:
// one JSON file (bench/results/latest.json) holding a list of Result, written by
// every runner (the side-by-side comparisons, bench/scale), each replacing the
// entries it measured and keeping the others.
package results

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Result is one figure measured side by side with its baseline.
//
// Ratio is oriented so that higher is better for Exchange: Value/BaselineValue
// for a throughput (HigherIsBetter), BaselineValue/Value for a time or a size.
// A figure checked against a target rather than another system names the
// target as its baseline ("target") and the target's value as BaselineValue.
type Result struct {
	Name          string  `json:"name"`
	Unit          string  `json:"unit"`
	Value         float64 `json:"value"`
	Baseline      string  `json:"baseline"`
	BaselineValue float64 `json:"baseline_value"`
	Ratio         float64 `json:"ratio"`
	// Rounds is how many interleaved rounds the median was taken over.
	Rounds int `json:"rounds,omitempty"`
	// Note says anything a reader needs (sizes, conditions).
	Note string `json:"note,omitempty"`
}

// New returns a Result with its Ratio computed: value/baseline when higher
// values are better (throughputs), baseline/value otherwise (times, sizes).
func New(name, unit string, value float64, baseline string, baselineValue float64, higherIsBetter bool) Result {
	r := Result{Name: name, Unit: unit, Value: value, Baseline: baseline, BaselineValue: baselineValue}
	switch {
	case higherIsBetter && baselineValue != 0:
		r.Ratio = value / baselineValue
	case !higherIsBetter && value != 0:
		r.Ratio = baselineValue / value
	}
	return r
}

// Median returns the median of xs (the mean of the middle two for an even
// count), or 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Read returns the results stored at path; a missing file is no results.
func Read(path string) ([]Result, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rs []Result
	if err := json.Unmarshal(b, &rs); err != nil {
		return nil, fmt.Errorf("results: %s: %w", path, err)
	}
	return rs, nil
}

// Merge stores rs at path: an entry of the file with the same name as one of
// rs is replaced, the others are kept; the file is written whole through a
// temporary file and a rename. It returns the merged list.
func Merge(path string, rs []Result) ([]Result, error) {
	old, err := Read(path)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]int, len(old))
	for i, r := range old {
		byName[r.Name] = i
	}
	merged := old
	for _, r := range rs {
		if i, ok := byName[r.Name]; ok {
			merged[i] = r
			continue
		}
		byName[r.Name] = len(merged)
		merged = append(merged, r)
	}
	b, err := json.MarshalIndent(merged, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	return merged, os.Rename(tmp, path)
}

// WriteMarkdown writes rs as a markdown table.
func WriteMarkdown(w io.Writer, rs []Result) error {
	var b strings.Builder
	b.WriteString("| name | value | unit | baseline | baseline value | ratio |\n|---|---:|---|---|---:|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %.2f |\n", r.Name, num(r.Value), r.Unit, r.Baseline, num(r.BaselineValue), r.Ratio)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func num(f float64) string {
	switch {
	case f >= 1000:
		return fmt.Sprintf("%.0f", f)
	case f >= 10:
		return fmt.Sprintf("%.1f", f)
	default:
		return fmt.Sprintf("%.3g", f)
	}
}

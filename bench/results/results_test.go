package results

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewOrientsRatio(t *testing.T) {
	if r := New("tput", "req/s", 120, "raw", 100, true); r.Ratio != 1.2 {
		t.Errorf("throughput ratio = %v, want 1.2", r.Ratio)
	}
	if r := New("mem", "KiB", 20, "raw", 30, false); r.Ratio != 1.5 {
		t.Errorf("size ratio = %v, want 1.5", r.Ratio)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestMergeReplacesByNameAndKeepsOthers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r", "latest.json")
	if _, err := Merge(path, []Result{{Name: "a", Value: 1}, {Name: "b", Value: 2}}); err != nil {
		t.Fatal(err)
	}
	got, err := Merge(path, []Result{{Name: "b", Value: 3}, {Name: "c", Value: 4}})
	if err != nil {
		t.Fatal(err)
	}
	read, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{1, 3, 4}
	if len(read) != 3 || len(got) != 3 {
		t.Fatalf("after merge: %+v", read)
	}
	for i, r := range read {
		if r.Value != want[i] {
			t.Errorf("entry %d (%s) = %v, want %v", i, r.Name, r.Value, want[i])
		}
	}
	var md bytes.Buffer
	if err := WriteMarkdown(&md, read); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "| c | 4 |") {
		t.Errorf("markdown:\n%s", md.String())
	}
}

package main

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestDocumentedCommandsParse checks every command shown in the README and
// docs/*.md against the real command tree: each `./bin/exchange ...` line
// (continuations joined) must name an existing command and parse with its
// flags and arguments; each synopsis line (`exchange controller [--flag ...]`)
// may only name flags that exist under its command; each `make X` must be a
// target of the Makefile. A documented flag or command that does not exist
// fails here.
func TestDocumentedCommandsParse(t *testing.T) {
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	docs = append([]string{"../../README.md"}, docs...)
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	var runnable, synopses, makes int
	for _, doc := range docs {
		for _, l := range documentedCommands(t, doc) {
			words := shellWords(l.text)
			switch {
			case len(words) == 0:
			case words[0] == "make":
				makes++
				for _, target := range words[1:] {
					if strings.HasPrefix(target, "-") || strings.Contains(target, "=") {
						continue
					}
					if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(target) + `:`).Match(makefile) {
						t.Errorf("%s:%d: make %s: no such target in the Makefile", doc, l.line, target)
					}
				}
			case words[0] == "exchange":
				synopses++
				text, _, _ := strings.Cut(l.text, " # ")
				checkSynopsis(t, doc, l.line, words[1:], text)
			default:
				runnable++
				checkRunnable(t, doc, l.line, words[1:])
			}
		}
	}
	// The docs show all three kinds; finding none means the extraction broke.
	if runnable < 20 || synopses < 4 || makes < 4 {
		t.Errorf("found %d runnable commands, %d synopses and %d make lines; the extraction is broken", runnable, synopses, makes)
	}
}

// checkRunnable parses args as `exchange args...` would, without running it.
func checkRunnable(t *testing.T, doc string, line int, args []string) {
	t.Helper()
	root := newRootCommand(io.Discard, io.Discard)
	cmd, rest, err := root.Find(args)
	if err != nil {
		t.Errorf("%s:%d: exchange %s: %v", doc, line, strings.Join(args, " "), err)
		return
	}
	if cmd == root && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		t.Errorf("%s:%d: exchange %s: no such command", doc, line, strings.Join(args, " "))
		return
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Errorf("%s:%d: exchange %s: %v", doc, line, strings.Join(args, " "), err)
		return
	}
	if pos := cmd.Flags().Args(); len(pos) > 0 && cmd.HasSubCommands() {
		t.Errorf("%s:%d: exchange %s: %q is not a subcommand of %s", doc, line, strings.Join(args, " "), pos[0], cmd.CommandPath())
		return
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		t.Errorf("%s:%d: exchange %s: %v", doc, line, strings.Join(args, " "), err)
	}
}

var flagName = regexp.MustCompile(`(?:^|[\s\[|])(--?[a-zA-Z][a-zA-Z0-9-]*)`)

// checkSynopsis checks that every flag a synopsis names exists on its
// command or one of its subcommands.
func checkSynopsis(t *testing.T, doc string, line int, words []string, text string) {
	t.Helper()
	if len(words) == 0 || strings.HasPrefix(words[0], "[") || strings.HasPrefix(words[0], "-") {
		return
	}
	root := newRootCommand(io.Discard, io.Discard)
	cmd, _, err := root.Find(words[:1])
	if err != nil || cmd == root {
		t.Errorf("%s:%d: synopsis of exchange %s: no such command", doc, line, words[0])
		return
	}
	known := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		add := func(f *pflag.Flag) {
			known["--"+f.Name] = true
			if f.Shorthand != "" {
				known["-"+f.Shorthand] = true
			}
		}
		c.Flags().VisitAll(add)
		c.PersistentFlags().VisitAll(add)
		c.InheritedFlags().VisitAll(add)
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(cmd)
	for _, m := range flagName.FindAllStringSubmatch(text, -1) {
		if !known[m[1]] {
			t.Errorf("%s:%d: synopsis of exchange %s names %s, which no command under it has", doc, line, words[0], m[1])
		}
	}
}

type docLine struct {
	line int
	text string
}

// documentedCommands returns the command lines of doc's fenced code blocks:
// `make ...`, `./bin/exchange ...` (and `bin/exchange`), and synopsis lines
// starting with `exchange `, with their continuation lines joined (a trailing
// backslash, or for a synopsis an indented line that does not start a new
// command).
func documentedCommands(t *testing.T, doc string) []docLine {
	t.Helper()
	f, err := os.Open(doc)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []docLine
	var fenced, continued, synopsis bool
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		raw := sc.Text()
		trimmed := strings.TrimSpace(raw)
		if strings.HasPrefix(trimmed, "```") {
			fenced, continued, synopsis = !fenced, false, false
			continue
		}
		if !fenced {
			continue
		}
		if continued || (synopsis && strings.HasPrefix(raw, " ") && !isCommandStart(trimmed)) {
			last := &out[len(out)-1]
			last.text = strings.TrimSuffix(last.text, `\`) + " " + trimmed
			continued = strings.HasSuffix(trimmed, `\`)
			continue
		}
		synopsis = false
		if !isCommandStart(trimmed) {
			continued = false
			continue
		}
		out = append(out, docLine{line: n, text: trimmed})
		continued = strings.HasSuffix(trimmed, `\`)
		synopsis = strings.HasPrefix(trimmed, "exchange ")
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

var envAssign = regexp.MustCompile(`^([A-Z_][A-Z0-9_]*=\S*\s+)+`)

func isCommandStart(s string) bool {
	s = envAssign.ReplaceAllString(s, "")
	for _, p := range []string{"./bin/exchange ", "bin/exchange ", "exchange ", "make "} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return s == "make" || s == "./bin/exchange"
}

// shellWords splits a documented command line into its words as a POSIX shell
// would for these simple lines: leading VAR=value assignments dropped, quotes
// removed, a comment, a pipe, a redirection or a second command ends it,
// $VAR and $(...) stand for one placeholder word, and `...` is dropped.
func shellWords(s string) []string {
	s = envAssign.ReplaceAllString(strings.TrimSpace(s), "")
	s = regexp.MustCompile(`\$\([^)]*\)`).ReplaceAllString(s, "X")
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	flush := func() {
		if inWord {
			if w := cur.String(); w != "..." {
				words = append(words, w)
			}
		}
		cur.Reset()
		inWord = false
	}
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			flush()
		case (r == '#' && !inWord) || r == '|' || r == ';' || r == '&' || r == '>' || r == '<':
			if r == '|' && words != nil && len(words) > 0 && words[0] == "exchange" {
				// a synopsis: | separates alternatives, keep going
				flush()
				continue
			}
			flush()
			return normalise(words)
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	flush()
	return normalise(words)
}

func normalise(words []string) []string {
	if len(words) > 0 {
		switch words[0] {
		case "./bin/exchange", "bin/exchange":
			words[0] = "./bin/exchange"
		}
	}
	return words
}

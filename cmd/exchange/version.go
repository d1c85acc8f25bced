package main

import (
	"fmt"
	"io"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newVersionCommand) }

// readBuildInfo is debug.ReadBuildInfo; tests replace it.
var readBuildInfo = debug.ReadBuildInfo

// version describes the binary from its build information: the module
// version ("(devel)" for a build from a work tree), the VCS commit it was
// built from, marked "+dirty" when the work tree had changes (vcs.modified),
// and the Go version.
func version() string {
	bi, ok := readBuildInfo()
	if !ok {
		return "unknown (no build information)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	switch {
	case rev == "":
		v += ", commit unknown"
	case modified == "true":
		v += ", commit " + rev + "+dirty"
	default:
		v += ", commit " + rev
	}
	return v + ", " + bi.GoVersion
}

func newVersionCommand(stdout, _ io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and VCS commit of this binary (also: exchange --version)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(stdout, "exchange", version())
			return err
		},
	}
}

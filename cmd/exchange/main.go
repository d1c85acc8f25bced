// Command exchange is the one binary of Exchange: a controller, a connector,
// the management client and a narrated demo.
//
//	exchange controller   run a controller node (single node, data in ./exchange-data; or one of a cluster)
//	exchange connector    run a connector that answers ECHO and reports PRIMARY changes
//	exchange ctl          query and drive a controller through its management API
//	exchange demo         one process: embedded controller and connectors, narrated
//	                      (--cluster: three cluster nodes, a forwarded command, the leader stopped)
//	exchange version      the module version and VCS commit of the binary (also --version)
//
// Every flag can also be set with an environment variable: EXCHANGE_ followed
// by the flag name in upper case with dashes as underscores (--grpc-addr is
// EXCHANGE_GRPC_ADDR). A flag given on the command line wins. The flags of
// the ctl subcommands read EXCHANGE_CTL_* (ctl send --target is
// EXCHANGE_CTL_TARGET, never the connector's EXCHANGE_TARGET); ctl --token
// reads EXCHANGE_MANAGEMENT_TOKEN.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// exitError carries a specific exit code out of a subcommand. Those with
// exitUsage are followed by a pointer to the command's --help.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// run executes the command line args and returns the process exit code. It is
// main without the process: tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runIO(ctx, args, os.Stdin, stdout, stderr)
}

// runIO is run with stdin given: `ctl batches create -f -` and
// `ctl send --payload -` read it.
func runIO(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCommand(stdout, stderr)
	root.SetIn(stdin)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	code := 1
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case strings.HasPrefix(err.Error(), "unknown command "): // cobra's, for a mistyped subcommand
		code = exitUsage
	}
	fmt.Fprintln(stderr, "exchange:", err)
	if code == exitUsage && cmd != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "exchange",
		Short: "Send commands to fleets of connectors and get their replies, reliably",
		Long: `Send commands to fleets of connectors and get their replies, reliably.

Every flag can also be set with an environment variable: EXCHANGE_ followed by
the flag name in upper case, dashes as underscores (--grpc-addr is
EXCHANGE_GRPC_ADDR); the flags of the ctl subcommands read EXCHANGE_CTL_*
(EXCHANGE_CTL_TARGET), and ctl --token reads EXCHANGE_MANAGEMENT_TOKEN. A flag
given on the command line wins. Each command's --help lists its variables.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return bindEnv(cmd)
		},
	}
	// A bad flag, anywhere, is a usage error (exit code 2, with a pointer to
	// --help); subcommands inherit this.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: exitUsage, err: err} })
	root.Version = version()
	root.SetVersionTemplate("exchange {{.Version}}\n")
	root.SetUsageTemplate(root.UsageTemplate() + "{{envHelp .}}")
	root.SetOut(stdout)
	root.SetErr(stderr)
	for _, sub := range subcommands {
		root.AddCommand(sub(stdout, stderr))
	}
	return root
}

// subcommands lists the constructors of the top-level commands; each file
// adds its own in an init function.
var subcommands []func(stdout, stderr io.Writer) *cobra.Command

// envAnnotation names a flag's environment variable when the default name
// would be ambiguous: `ctl --token` is the management token, so it reads
// EXCHANGE_MANAGEMENT_TOKEN, not the connectors' EXCHANGE_TOKEN.
const envAnnotation = "exchange_env"

// envSepAnnotation gives a list flag's separator in its environment
// variable when it is not a comma (--header: a newline, since header values
// hold commas).
const envSepAnnotation = "exchange_env_sep"

// bindEnv gives every flag of cmd not set on the command line the value of its
// EXCHANGE_* environment variable, if set. The flags of the ctl subcommands
// (ctl send --target, --type, --timeout, ...) read EXCHANGE_CTL_*: a shell or
// a host set up for a connector or a controller has EXCHANGE_TARGET,
// EXCHANGE_TIMEOUT..., and ctl must not pick them up. ctl's own flags (--addr,
// --output and --token) keep their names.
func bindEnv(cmd *cobra.Command) error {
	var errs []error
	visitEnv(cmd, func(f *pflag.Flag, name string) {
		if f.Changed {
			return
		}
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			sep := ","
			if seps := f.Annotations[envSepAnnotation]; len(seps) > 0 {
				sep = seps[0]
			}
			if err := sv.Replace(strings.Split(v, sep)); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	})
	return errors.Join(errs...)
}

// visitEnv calls fn for every flag of cmd (its own, then those it inherits)
// but --help and --version, with the name of its environment variable.
func visitEnv(cmd *cobra.Command, fn func(f *pflag.Flag, env string)) {
	var ctl *cobra.Command // the ctl command cmd is under, if any
	for c := cmd; c != nil; c = c.Parent() {
		if c.Parent() != nil && c.Parent().Parent() == nil && c.Name() == "ctl" {
			ctl = c
		}
	}
	visit := func(f *pflag.Flag) {
		if f.Name == "help" || f.Name == "version" {
			return
		}
		prefix := "EXCHANGE_"
		if ctl != nil && ctl.PersistentFlags().Lookup(f.Name) == nil {
			prefix = "EXCHANGE_CTL_"
		}
		name := prefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if names := f.Annotations[envAnnotation]; len(names) > 0 {
			name = names[0]
		}
		fn(f, name)
	}
	cmd.LocalFlags().VisitAll(visit)
	cmd.InheritedFlags().VisitAll(visit)
}

// The usage template of every command ends with envHelp (cobra's template
// functions are global: registered once).
func init() { cobra.AddTemplateFunc("envHelp", envHelp) }

// envHelp lists the environment variables of cmd's flags, for the end of
// its --help.
func envHelp(cmd *cobra.Command) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	visitEnv(cmd, func(f *pflag.Flag, name string) { fmt.Fprintf(tw, "  %s\t--%s\n", name, f.Name) })
	_ = tw.Flush()
	if b.Len() == 0 {
		return ""
	}
	return "\nEnvironment variables (a flag given on the command line wins):\n" + b.String()
}

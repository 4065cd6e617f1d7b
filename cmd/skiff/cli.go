package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// cli is what every client verb shares: the streams, the --config flag and
// the way to build an API client from it.
type cli struct {
	in       io.Reader
	out, err io.Writer

	configPath string
	endpoint   string // of the last client made; for error hints
}

// client loads the config named by --config (or the default) and returns a
// client for it.
func (a *cli) client() (*client.Client, error) {
	path := a.configPath
	if path == "" {
		path = client.DefaultConfigPath()
	}
	cfg, err := client.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.WithUserAgent("skiff-cli"))
	if err != nil {
		return nil, fmt.Errorf("client config %s: %w", path, err)
	}
	a.endpoint = c.Endpoint()
	return c, nil
}

// exitError ends the command with a status; msg, when set, is printed as
// an error first.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return fmt.Sprintf("exit status %d", e.code)
}

// usageError is a mistake on the command line; the hint points at --help.
type usageError struct {
	cmd string
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf(format, args...)}
}

// execute runs the command line and returns the process exit status.
func execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &cli{in: stdin, out: stdout, err: stderr}
	root := newRootCmd(a)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	return a.report(err)
}

// report prints err for a person and picks the exit status.
func (a *cli) report(err error) int {
	var ex *exitError
	if errors.As(err, &ex) {
		if ex.msg != "" {
			fmt.Fprintf(a.err, "Error: %s\n", ex.msg)
		}
		return ex.code
	}
	fmt.Fprintf(a.err, "Error: %s\n", describe(err))
	if hint := a.hint(err); hint != "" {
		fmt.Fprintln(a.err, hint)
	}
	return 1
}

// describe renders an error; an API error as "<message> (code C, request
// R)", after whatever context the CLI wrapped around it.
func describe(err error) string {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return err.Error()
	}
	prefix := ""
	var re *client.ResponseError
	if errors.As(err, &re) {
		// Drop the client's "METHOD /path: status" detail, keep ours.
		if p, ok := strings.CutSuffix(err.Error(), re.Error()); ok {
			prefix = p
		}
	}
	msg := ae.Message
	if msg == "" {
		msg = ae.Code
	}
	if ae.RequestID != "" {
		return fmt.Sprintf("%s%s (code %s, request %s)", prefix, msg, ae.Code, ae.RequestID)
	}
	return fmt.Sprintf("%s%s (code %s)", prefix, msg, ae.Code)
}

// hint suggests what to do about err, or "".
func (a *cli) hint(err error) string {
	var ue *usageError
	if errors.As(err, &ue) {
		return fmt.Sprintf("See '%s --help'.", ue.cmd)
	}
	switch client.StatusCode(err) {
	case http.StatusUnauthorized, http.StatusForbidden:
		return "Check the access key in the client config (--config, $SKIFF_CONFIG or ~/.skiff/config.json)."
	case http.StatusNotFound:
		return "List groups with `skiff ps -a`."
	}
	if client.ErrorCode(err) == client.WaitTimeoutCode {
		return "See what the group is doing with `skiff events ID`, or wait longer."
	}
	var oe *net.OpError
	var de *net.DNSError
	if errors.As(err, &oe) || errors.As(err, &de) {
		return fmt.Sprintf("Is the skiff server at %s running? Start one with `skiff up`, or fix the endpoint in the client config.", a.endpoint)
	}
	return ""
}

// Output formats, for -o.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// addOutputFlag adds -o/--output to cmd.
func addOutputFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVarP(p, "output", "o", outputTable, "output format: table or json")
}

func checkOutput(cmd *cobra.Command, o string) error {
	switch o {
	case outputTable, outputJSON, "":
		return nil
	}
	return usagef(cmd, "unknown output format %q: want table or json", o)
}

// printJSON writes v as indented JSON.
func (a *cli) printJSON(v any) error {
	enc := json.NewEncoder(a.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// stdinFile returns stdin as a file when it is one (a terminal, a pipe).
func (a *cli) stdinFile() (*os.File, bool) {
	f, ok := a.in.(*os.File)
	return f, ok
}

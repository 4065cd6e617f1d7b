package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

func newExecCmd(a *cli) *cobra.Command {
	var (
		interactive, tty bool
		container        string
		timeout          int
		output           string
	)
	cmd := &cobra.Command{
		Use:   "exec [flags] ID|NAME [--] COMMAND [ARG...]",
		Short: "Run a command in a running container",
		Long: `Run a command in a running container. Without -i or -t the command runs
to completion and its output is printed; with -i (stdin) or -t (terminal)
it is streamed, e.g. skiff exec -it web sh.`,
		Args: minArgs(2, "a group ID or NAME and a COMMAND"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(cmd, output); err != nil {
				return err
			}
			id, command := args[0], args[1:]
			if command[0] == "--" {
				command = command[1:]
			}
			if len(command) == 0 {
				return usagef(cmd, "no COMMAND given")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if interactive || tty {
				return a.execInteractive(cmd, c, id, client.ExecOptions{Container: container, Command: command, TTY: tty}, interactive)
			}
			res, err := c.Exec(cmd.Context(), id, api.ExecRequest{Container: container, Command: command, TimeoutSeconds: timeout})
			if err != nil {
				return err
			}
			if output == outputJSON {
				if err := a.printJSON(res); err != nil {
					return err
				}
			} else {
				io.WriteString(a.out, res.Stdout)
				io.WriteString(a.err, res.Stderr)
			}
			if res.ExitCode != 0 {
				return &exitError{code: res.ExitCode}
			}
			return nil
		},
	}
	cmd.Flags().SetInterspersed(false)
	f := cmd.Flags()
	f.BoolVarP(&interactive, "interactive", "i", false, "stream standard input to the command")
	f.BoolVarP(&tty, "tty", "t", false, "give the command a terminal")
	f.StringVarP(&container, "container", "c", "", "the container (default: the group's first)")
	f.IntVar(&timeout, "timeout", 0, "seconds the command may run, without -i/-t (default: the server's, 60)")
	addOutputFlag(cmd, &output)
	return cmd
}

// execInteractive streams the command over the exec WebSocket. With -t and
// a terminal on stdin, the terminal is put in raw mode and its size follows.
func (a *cli) execInteractive(cmd *cobra.Command, c *client.Client, id string, o client.ExecOptions, stdin bool) error {
	ctx := cmd.Context()
	o.Stdout, o.Stderr = a.out, a.err
	if stdin {
		o.Stdin = a.in
	}
	if f, ok := a.stdinFile(); ok && o.TTY && term.IsTerminal(int(f.Fd())) {
		if stdin {
			state, err := term.MakeRaw(int(f.Fd()))
			if err != nil {
				return fmt.Errorf("put the terminal in raw mode: %w", err)
			}
			defer term.Restore(int(f.Fd()), state)
			// Raw mode needs \r\n; the remote terminal produces it.
		}
		sizeFd := int(f.Fd())
		if out, ok := a.out.(*os.File); ok && term.IsTerminal(int(out.Fd())) {
			sizeFd = int(out.Fd())
		}
		o.Resize = watchTermSize(ctx, sizeFd)
	} else if o.TTY && stdin {
		fmt.Fprintln(a.err, "Warning: standard input is not a terminal; -t gives the command a terminal anyway.")
	}
	code, err := c.ExecInteractive(ctx, id, o)
	if err != nil {
		var ee *client.ExecExitError
		if errors.As(err, &ee) {
			return &exitError{code: nonZero(code, 126), msg: strings.TrimPrefix(ee.Error(), "exec: ")}
		}
		if ctx.Err() != nil {
			return &exitError{code: 130}
		}
		return err
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

func nonZero(code, def int) int {
	if code == 0 {
		return def
	}
	return code
}

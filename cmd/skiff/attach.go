package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/skiffhq/skiff/client"
)

func newAttachCmd(a *cli) *cobra.Command {
	var container string
	var noStdin bool
	cmd := &cobra.Command{
		Use:   "attach [flags] ID|NAME",
		Short: "Attach to a running container started with tty or stdin",
		Long: `Attach to the terminal or standard input of a running container whose
spec sets tty: true or stdin: true, and stream its output. With a terminal
on stdin, it is put in raw mode (keys, Ctrl-C included, go to the container)
and its size follows. Interrupting (without a terminal) or closing the
connection detaches; the container goes on.`,
		Args: minArgs(1, "a group ID or NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef(cmd, "one group ID or NAME, no more")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			o := client.AttachOptions{Container: container, Stdout: a.out}
			if !noStdin {
				o.Stdin = a.in
			}
			if f, ok := a.stdinFile(); ok && term.IsTerminal(int(f.Fd())) {
				if !noStdin {
					state, err := term.MakeRaw(int(f.Fd()))
					if err != nil {
						return fmt.Errorf("put the terminal in raw mode: %w", err)
					}
					defer term.Restore(int(f.Fd()), state)
				}
				o.Resize = watchTermSize(ctx, int(f.Fd()))
			}
			if err := c.Attach(ctx, args[0], o); err != nil {
				if ctx.Err() != nil {
					return &exitError{code: 130}
				}
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&container, "container", "c", "", "the container (default: the group's first)")
	f.BoolVar(&noStdin, "no-stdin", false, "only stream the output")
	return cmd
}

package main

import (
	"github.com/spf13/cobra"
)

// newRootCmd builds the command tree. Verbs read their context from
// cmd.Context(), which is cancelled on SIGINT/SIGTERM.
func newRootCmd(a *cli) *cobra.Command {
	root := &cobra.Command{
		Use:   "skiff",
		Short: "Serverless container groups on your own hosts",
		Long: `skiff runs container groups (pods) in isolated sandboxes on a fleet of
your own Linux hosts. Start an all-in-one with 'skiff up', then use the
docker-like verbs below against it.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.PersistentFlags().StringVar(&a.configPath, "config", "",
		"client config file (default $SKIFF_CONFIG, else ~/.skiff/config.json)")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{cmd: cmd.CommandPath(), err: err}
	})
	root.AddGroup(
		&cobra.Group{ID: "groups", Title: "Container groups:"},
		&cobra.Group{ID: "fleet", Title: "Images and hosts:"},
		&cobra.Group{ID: "tenancy", Title: "Accounts and billing:"},
	)
	for _, c := range []*cobra.Command{
		newRunCmd(a), newCreateCmd(a), newPsCmd(a), newInspectCmd(a), newLogsCmd(a),
		newExecCmd(a), newAttachCmd(a), newRmCmd(a), newRestartCmd(a), newEventsCmd(a), newStatsCmd(a),
		newWaitCmd(a),
	} {
		c.GroupID = "groups"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newImageCmd(a), newCacheCmd(a), newHostsCmd(a)} {
		c.GroupID = "fleet"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newAccountCmd(a), newUsageCmd(a), newPriceCmd(a)} {
		c.GroupID = "tenancy"
		root.AddCommand(c)
	}
	root.AddCommand(newBenchCmd(a)) // bench.go
	addRoleCommands(root)
	root.AddCommand(inGroup("roles", newKubeletCmd(a)))
	return root
}

// exactArgs, minArgs: cobra's validators with our usage hint.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef(cmd, "%q needs exactly %s", cmd.CommandPath(), what)
		}
		return nil
	}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef(cmd, "%q needs at least %s", cmd.CommandPath(), what)
		}
		return nil
	}
}

// noArgs rejects positional arguments; hint says what to use instead.
func noArgs(hint string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usagef(cmd, "%q takes no arguments%s", cmd.CommandPath(), hint)
		}
		return nil
	}
}

package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/api"
)

// quotaFlags are the quota amounts of account create and account quota.
type quotaFlags struct {
	cpu, memory string
	groups      int
}

func (f *quotaFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.cpu, "cpu", "", "vCPU the account may hold at once, e.g. 16 (0 or empty: unlimited)")
	cmd.Flags().StringVar(&f.memory, "memory", "", "memory the account may hold at once, e.g. 64Gi (empty: unlimited)")
	cmd.Flags().IntVar(&f.groups, "groups", 0, "container groups the account may hold at once (0: unlimited)")
}

func (f *quotaFlags) quota(cmd *cobra.Command) (api.Quota, error) {
	q := api.Quota{Groups: f.groups}
	if f.cpu != "" {
		m, err := api.ParseCPU(f.cpu)
		if err != nil {
			return q, usagef(cmd, "--cpu: %v", err)
		}
		q.MilliCPU = m
	}
	if f.memory != "" {
		m, err := api.ParseQuantity(f.memory)
		if err != nil || m < 0 {
			return q, usagef(cmd, "--memory %q: want a quantity such as 64Gi", f.memory)
		}
		q.Memory = int64(m)
	}
	if f.groups < 0 {
		return q, usagef(cmd, "--groups must not be negative")
	}
	return q, nil
}

func quotaString(q api.Quota) string {
	s := func(set bool, v string) string {
		if !set {
			return "-"
		}
		return v
	}
	return fmt.Sprintf("cpu=%s memory=%s groups=%s", s(q.MilliCPU > 0, humanCores(q.MilliCPU)), s(q.Memory > 0, humanBytes(q.Memory)), s(q.Groups > 0, fmt.Sprint(q.Groups)))
}

func newAccountCmd(a *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "account",
		Short: "Manage accounts, their access keys and quotas (admin)",
		Long: `Accounts are tenants: every container group belongs to one, and an
account never sees another's groups. Each account has up to five access key
pairs (used by the CLI, the native API and ECI SDKs) and a quota.`,
		Args: noArgs(": see 'skiff account --help'"),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	var output string
	var qf quotaFlags
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an account and its first access key (the secret is shown once)",
		Args:  exactArgs(1, "an account name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := qf.quota(cmd)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			res, err := c.CreateAccount(cmd.Context(), api.CreateAccountRequest{Name: args[0], Quota: q})
			if err != nil {
				return err
			}
			if output == outputJSON {
				return a.printJSON(res)
			}
			fmt.Fprintf(a.out, "account:           %s\nquota:             %s\naccessKeyId:       %s\naccessKeySecret:   %s\n(the secret is not shown again)\n",
				res.Account.ID, quotaString(res.Account.Quota), res.Key.ID, res.Key.Secret)
			return nil
		},
	}
	qf.add(create)
	addOutputFlag(create, &output)

	var lsOut string
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List accounts with their quotas",
		Args:    noArgs(""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			list, err := c.Accounts(cmd.Context())
			if err != nil {
				return err
			}
			if lsOut == outputJSON {
				if list == nil {
					list = []api.Account{}
				}
				return a.printJSON(list)
			}
			tw := newTable(a.out, "ACCOUNT", "ADMIN", "QUOTA", "AGE")
			now := timeNow()
			for _, acct := range list {
				row(tw, acct.ID, fmt.Sprint(acct.Admin), quotaString(acct.Quota), age(acct.CreatedAt, now))
			}
			return tw.Flush()
		},
	}
	addOutputFlag(ls, &lsOut)

	var qf2 quotaFlags
	quota := &cobra.Command{
		Use:   "quota ACCOUNT",
		Short: "Set an account's quota, or show it and its usage without flags",
		Args:  exactArgs(1, "an account"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if cmd.Flags().NFlag() > 0 {
				q, err := qf2.quota(cmd)
				if err != nil {
					return err
				}
				// Flags not given keep their current value.
				acct, err := c.Account(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if !cmd.Flags().Changed("cpu") {
					q.MilliCPU = acct.Quota.MilliCPU
				}
				if !cmd.Flags().Changed("memory") {
					q.Memory = acct.Quota.Memory
				}
				if !cmd.Flags().Changed("groups") {
					q.Groups = acct.Quota.Groups
				}
				if _, err := c.SetQuota(cmd.Context(), args[0], q); err != nil {
					return err
				}
			}
			u, err := c.AccountUsage(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "account %s\nquota   %s\nholds   cpu=%s memory=%s groups=%d\n", u.AccountID, quotaString(u.Quota),
				humanCores(u.MilliCPU), humanBytes(u.Memory), u.Groups)
			return nil
		},
	}
	qf2.add(quota)

	cmd.AddCommand(create, ls, quota, newKeyCmd(a))
	return cmd
}

func newKeyCmd(a *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Manage an account's access key pairs",
		Args:  noArgs(": see 'skiff account key --help'"),
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	var lsOut string
	ls := &cobra.Command{
		Use:   "ls ACCOUNT",
		Short: "List an account's keys (never their secrets)",
		Args:  exactArgs(1, "an account"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			keys, err := c.AccessKeys(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if lsOut == outputJSON {
				if keys == nil {
					keys = []api.AccessKey{}
				}
				return a.printJSON(keys)
			}
			tw := newTable(a.out, "ACCESS KEY ID", "STATE", "AGE")
			now := timeNow()
			for _, k := range keys {
				state := "enabled"
				if k.Disabled {
					state = "disabled"
				}
				row(tw, k.ID, state, age(k.CreatedAt, now))
			}
			return tw.Flush()
		},
	}
	addOutputFlag(ls, &lsOut)
	printKey := func(k *api.AccessKey) {
		fmt.Fprintf(a.out, "accessKeyId:       %s\naccessKeySecret:   %s\n(the secret is not shown again)\n", k.ID, k.Secret)
	}
	create := &cobra.Command{
		Use:   "create ACCOUNT",
		Short: "Add a key pair to an account",
		Args:  exactArgs(1, "an account"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			k, err := c.CreateAccessKey(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			printKey(k)
			return nil
		},
	}
	action := func(use, short, act string) *cobra.Command {
		return &cobra.Command{
			Use:   use + " ACCOUNT KEY_ID",
			Short: short,
			Args:  exactArgs(2, "an account and an access key id"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.client()
				if err != nil {
					return err
				}
				k, err := c.AccessKeyAction(cmd.Context(), args[0], args[1], act)
				if err != nil {
					return err
				}
				if act == "rotate" {
					fmt.Fprintf(a.out, "key %s is disabled; its replacement:\n", args[1])
					printKey(k)
					return nil
				}
				fmt.Fprintf(a.out, "%s %sd\n", k.ID, act)
				return nil
			},
		}
	}
	cmd.AddCommand(ls, create,
		action("disable", "Disable a key: requests signed with it are refused", "disable"),
		action("enable", "Enable a disabled key again", "enable"),
		action("rotate", "Replace a key with a new one (the old is disabled in the same step)", "rotate"))
	return cmd
}

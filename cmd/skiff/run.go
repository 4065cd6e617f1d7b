package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// runOptions are the flags of `skiff run`.
type runOptions struct {
	detach      bool
	name        string
	cpu         string
	memory      string
	env         []string
	publish     []string
	restart     string
	labels      []string
	workdir     string
	entrypoint  string
	tty         bool
	interactive bool
	rm          bool
	clientToken string
	waitTimeout time.Duration
	output      string
}

func newRunCmd(a *cli) *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE [--] [ARG...]",
		Short: "Create a container group from an image and run it",
		Long: `Create a container group with one container running IMAGE.

Arguments after IMAGE replace the image's CMD (as docker does); use
--entrypoint to replace its ENTRYPOINT as well. Without -d, the command
follows the container's log and exits with its exit code.`,
		Example: `  skiff run -d --name web -p 8080:80 nginx
  skiff run --rm busybox -- sh -c 'echo hello'`,
		Args: minArgs(1, "an IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(cmd, o.output); err != nil {
				return err
			}
			req, err := buildRunRequest(o, args, os.LookupEnv)
			if err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			switch {
			case o.interactive && !o.detach:
				return usagef(cmd, "interactive attach isn't supported yet: start the group with -d (skiff run -d -it ...) and attach with `skiff exec -it ID sh`")
			case o.rm && o.detach:
				return usagef(cmd, "--rm needs the group to be followed: drop -d, or remove it later with `skiff rm`")
			}
			return a.run(cmd.Context(), o, req)
		},
	}
	// Everything after IMAGE belongs to the container.
	cmd.Flags().SetInterspersed(false)
	f := cmd.Flags()
	f.BoolVarP(&o.detach, "detach", "d", false, "run in the background and print the group id once Running")
	f.StringVar(&o.name, "name", "", "group name (also the container's; default: generated)")
	f.StringVar(&o.cpu, "cpu", "", "CPU limit in cores (0.5) or millicores (500m)")
	f.StringVarP(&o.memory, "memory", "m", "", "memory limit (256Mi, 1Gi)")
	f.StringArrayVarP(&o.env, "env", "e", nil, "set an environment variable K=V (K alone takes it from here)")
	f.StringArrayVarP(&o.publish, "publish", "p", nil, "publish a port HOSTPORT:PORT[/udp] (or PORT[/udp], not published)")
	f.StringVar(&o.restart, "restart", "no", "restart policy: no, always, on-failure")
	f.StringArrayVarP(&o.labels, "label", "l", nil, "set a label k=v")
	f.StringVarP(&o.workdir, "workdir", "w", "", "working directory in the container")
	f.StringVar(&o.entrypoint, "entrypoint", "", "replace the image's ENTRYPOINT")
	f.BoolVarP(&o.tty, "tty", "t", false, "give the container a terminal")
	f.BoolVarP(&o.interactive, "interactive", "i", false, "keep the container's stdin open")
	f.BoolVar(&o.rm, "rm", false, "remove the group when it ends")
	f.StringVar(&o.clientToken, "client-token", "", "idempotency token: a repeated run with the same token returns the same group")
	f.DurationVar(&o.waitTimeout, "wait-timeout", 60*time.Second, "how long to wait for the group to be Running")
	addOutputFlag(cmd, &o.output)
	return cmd
}

// buildRunRequest turns run's flags and arguments into a create request.
// lookupEnv resolves -e K without a value.
func buildRunRequest(o runOptions, args []string, lookupEnv func(string) (string, bool)) (api.CreateGroupRequest, error) {
	var req api.CreateGroupRequest
	if len(args) == 0 || args[0] == "" {
		return req, errors.New("no image given")
	}
	image, rest := args[0], args[1:]
	if len(rest) > 0 && rest[0] == "--" {
		rest = rest[1:]
	}
	ctr := api.Container{
		Name:       "main",
		Image:      image,
		WorkingDir: o.workdir,
		TTY:        o.tty,
		Stdin:      o.interactive,
	}
	if o.name != "" {
		ctr.Name = o.name
	}
	if o.entrypoint != "" {
		ctr.Command = []string{o.entrypoint}
	}
	if len(rest) > 0 {
		ctr.Args = rest
	}
	if o.cpu != "" {
		m, err := api.ParseCPU(o.cpu)
		if err != nil {
			return req, fmt.Errorf("--cpu: %w", err)
		}
		if m <= 0 {
			return req, fmt.Errorf("--cpu %q: must be more than 0", o.cpu)
		}
		ctr.Resources.Limits.CPU = api.CPU(m)
	}
	if o.memory != "" {
		q, err := api.ParseQuantity(o.memory)
		if err != nil {
			return req, fmt.Errorf("--memory: %w", err)
		}
		if q <= 0 {
			return req, fmt.Errorf("--memory %q: must be more than 0", o.memory)
		}
		ctr.Resources.Limits.Memory = q
	}
	env, err := parseEnv(o.env, lookupEnv)
	if err != nil {
		return req, err
	}
	ctr.Env = env
	ports, err := parsePorts(o.publish)
	if err != nil {
		return req, err
	}
	ctr.Ports = ports
	labels, err := parseLabels(o.labels)
	if err != nil {
		return req, err
	}
	policy, err := parseRestart(o.restart)
	if err != nil {
		return req, err
	}
	req = api.CreateGroupRequest{
		Name:        o.name,
		Labels:      labels,
		ClientToken: o.clientToken,
		Spec: api.GroupSpec{
			Containers:    []api.Container{ctr},
			RestartPolicy: policy,
		},
	}
	return req, nil
}

// parseEnv parses -e values: K=V, or K to copy K from lookup (skipped when
// unset there, as docker does).
func parseEnv(vals []string, lookup func(string) (string, bool)) ([]api.EnvVar, error) {
	var env []api.EnvVar
	for _, kv := range vals {
		k, v, hasValue := strings.Cut(kv, "=")
		if k == "" || strings.ContainsAny(k, " \t\n") {
			return nil, fmt.Errorf("-e %q: want NAME=VALUE with a non-empty name without spaces", kv)
		}
		if !hasValue {
			var ok bool
			if v, ok = lookup(k); !ok {
				continue
			}
		}
		env = append(env, api.EnvVar{Name: k, Value: v})
	}
	return env, nil
}

// parsePorts parses -p values: HOSTPORT:PORT[/PROTO] or PORT[/PROTO].
func parsePorts(vals []string) ([]api.ContainerPort, error) {
	var ports []api.ContainerPort
	for _, spec := range vals {
		s, proto, hasProto := strings.Cut(spec, "/")
		p := api.ContainerPort{Protocol: "TCP"}
		if hasProto {
			switch strings.ToLower(proto) {
			case "tcp":
			case "udp":
				p.Protocol = "UDP"
			default:
				return nil, fmt.Errorf("-p %q: protocol must be tcp or udp", spec)
			}
		}
		parts := strings.Split(s, ":")
		var err error
		switch len(parts) {
		case 1:
			p.ContainerPort, err = parsePort(parts[0])
		case 2:
			if p.HostPort, err = parsePort(parts[0]); err == nil {
				p.ContainerPort, err = parsePort(parts[1])
			}
		default:
			return nil, fmt.Errorf("-p %q: want HOSTPORT:PORT[/udp]; binding to one host address isn't supported", spec)
		}
		if err != nil {
			return nil, fmt.Errorf("-p %q: %w", spec, err)
		}
		for _, q := range ports {
			if p.HostPort != 0 && q.HostPort == p.HostPort && q.Protocol == p.Protocol {
				return nil, fmt.Errorf("-p %q: host port %d/%s is published twice", spec, p.HostPort, strings.ToLower(p.Protocol))
			}
		}
		ports = append(ports, p)
	}
	return ports, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q must be a number from 1 to 65535", s)
	}
	return n, nil
}

// parseLabels parses k=v pairs (k alone is an empty value).
func parseLabels(vals []string) (map[string]string, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(vals))
	for _, kv := range vals {
		k, v, _ := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("label %q: want KEY=VALUE", kv)
		}
		m[k] = v
	}
	return m, nil
}

// parseRestart maps docker's restart names onto the pod restart policy.
func parseRestart(s string) (api.RestartPolicy, error) {
	switch strings.ToLower(s) {
	case "", "no", "never":
		return api.RestartNever, nil
	case "always", "unless-stopped":
		return api.RestartAlways, nil
	case "on-failure", "onfailure":
		return api.RestartOnFailure, nil
	}
	if strings.HasPrefix(strings.ToLower(s), "on-failure:") {
		return "", fmt.Errorf("--restart %q: a retry limit isn't supported; use on-failure", s)
	}
	return "", fmt.Errorf("--restart %q: want no, always or on-failure", s)
}

// failed reports whether a group in status s has failed for good.
func failed(s api.Status) bool {
	return s == api.StatusFailed || s == api.StatusScheduleFailed || s == api.StatusExpired
}

// statusLine describes a group's status with its reason and message.
func statusLine(g *api.Group) string {
	s := string(g.Status)
	if g.Reason != "" {
		s += " (" + g.Reason + ")"
	}
	if g.Message != "" {
		s += ": " + g.Message
	}
	return s
}

func (a *cli) run(ctx context.Context, o runOptions, req api.CreateGroupRequest) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	g, _, err := c.CreateGroup(ctx, req)
	if err != nil {
		return err
	}
	if o.detach {
		return a.runDetached(ctx, c, g, o)
	}
	return a.runAttached(ctx, c, g, req.Spec.Containers[0].Name, o)
}

// waitStarted waits until g is Running or can no longer get there.
func waitStarted(ctx context.Context, c *client.Client, id string, timeout time.Duration) (*api.Group, error) {
	g, err := c.WaitAny(ctx, id, append([]api.Status{api.StatusRunning}, client.Unreachable(api.StatusRunning)...), timeout)
	if err == nil {
		return g, nil
	}
	if client.ErrorCode(err) == client.WaitTimeoutCode {
		if cur, gerr := c.GetGroup(ctx, id); gerr == nil {
			if cur.Status.Terminal() || cur.Status == api.StatusScheduleFailed {
				return cur, nil // it ran and ended, or never will
			}
			return nil, fmt.Errorf("group %s is still %s after %s: see `skiff events %s`", id, statusLine(cur), timeout, id)
		}
	}
	return nil, fmt.Errorf("wait for group %s: %w", id, err)
}

func (a *cli) runDetached(ctx context.Context, c *client.Client, g *api.Group, o runOptions) error {
	w, err := waitStarted(ctx, c, g.ID, o.waitTimeout)
	if err != nil {
		fmt.Fprintln(a.out, g.ID) // so that it can be cleaned up
		return err
	}
	if o.output == outputJSON {
		if err := a.printJSON(w); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(a.out, w.ID)
	}
	if failed(w.Status) {
		return &exitError{code: 1, msg: fmt.Sprintf("group %s is %s", w.ID, statusLine(w))}
	}
	return nil
}

// runAttached follows the container's log until the group ends and exits
// with the container's exit code.
func (a *cli) runAttached(ctx context.Context, c *client.Client, g *api.Group, container string, o runOptions) (err error) {
	id := g.ID
	if o.rm {
		defer func() {
			rmCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if _, rerr := c.DeleteGroup(rmCtx, id, true); rerr != nil && !client.IsNotFound(rerr) {
				fmt.Fprintf(a.err, "Warning: could not remove group %s: %s\n", id, describe(rerr))
			}
		}()
	}
	detached := func() error {
		if !o.rm {
			fmt.Fprintf(a.err, "Detached from group %s; it keeps running (`skiff logs -f %s`, `skiff rm -f %s`).\n", id, id, id)
		}
		return &exitError{code: 130}
	}

	g, err = waitStarted(ctx, c, id, o.waitTimeout)
	if err != nil {
		if ctx.Err() != nil {
			return detached()
		}
		return err
	}
	if g.Status == api.StatusScheduleFailed {
		return &exitError{code: 125, msg: fmt.Sprintf("group %s is %s", id, statusLine(g))}
	}
	restarts := 0
	if cs := containerStatus(g, container); cs != nil {
		restarts = cs.RestartCount
	}
	logErrShown := false
	for {
		rc, err := c.Logs(ctx, id, client.LogOptions{Container: container, Follow: true})
		if err == nil {
			_, _ = io.Copy(a.out, rc)
			rc.Close()
		} else if ctx.Err() == nil && !logErrShown {
			fmt.Fprintf(a.err, "Warning: cannot follow logs: %s\n", describe(err))
			logErrShown = true
		}
		if ctx.Err() != nil {
			return detached()
		}
		// The log ended: the container exited (or the server hung up). See
		// whether the group is done or the container came back.
		g, restarted, err := awaitEndOrRestart(ctx, c, id, container, restarts)
		if err != nil {
			if ctx.Err() != nil {
				return detached()
			}
			return err
		}
		if restarted != nil {
			restarts = *restarted
			continue
		}
		return groupExit(g, container)
	}
}

// awaitEndOrRestart polls until the group is terminal (restarted nil) or
// the container runs again with a higher restart count (returned).
func awaitEndOrRestart(ctx context.Context, c *client.Client, id, container string, restarts int) (*api.Group, *int, error) {
	delay := 100 * time.Millisecond
	for {
		g, err := c.GetGroup(ctx, id)
		if err != nil {
			return nil, nil, err
		}
		if g.Status.Terminal() || g.Status == api.StatusScheduleFailed {
			return g, nil, nil
		}
		if cs := containerStatus(g, container); cs != nil && cs.State == api.ContainerRunning && cs.RestartCount > restarts {
			n := cs.RestartCount
			return g, &n, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, time.Second)
	}
}

// groupExit turns a finished group into the CLI's exit: the container's
// exit code, or 125 with the reason when it never produced one.
func groupExit(g *api.Group, container string) error {
	if cs := containerStatus(g, container); cs != nil && cs.ExitCode != nil {
		if *cs.ExitCode == 0 {
			return nil
		}
		msg := ""
		if cs.Reason != "" && cs.Reason != "Error" && cs.Reason != "Completed" {
			msg = fmt.Sprintf("container %s: %s", container, cs.Reason)
		}
		return &exitError{code: *cs.ExitCode, msg: msg}
	}
	if g.Status == api.StatusSucceeded {
		return nil
	}
	return &exitError{code: 125, msg: fmt.Sprintf("group %s is %s", g.ID, statusLine(g))}
}

func containerStatus(g *api.Group, name string) *api.ContainerStatus {
	for i := range g.Containers {
		if g.Containers[i].Name == name {
			return &g.Containers[i]
		}
	}
	if name == "" && len(g.Containers) > 0 {
		return &g.Containers[0]
	}
	return nil
}

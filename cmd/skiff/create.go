package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/skiffhq/skiff/api"
)

func newCreateCmd(a *cli) *cobra.Command {
	var file, output string
	cmd := &cobra.Command{
		Use:   "create -f FILE",
		Short: "Create a container group from a YAML or JSON file",
		Long: `Create a container group from a file holding a create request:

  name: web
  labels: {app: web}
  spec:
    containers:
    - name: web
      image: nginx
      resources: {limits: {cpu: 0.5, memory: 256Mi}}

Use -f - to read standard input. Unknown fields are rejected.`,
		Args: noArgs("; the group comes from -f FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(cmd, output); err != nil {
				return err
			}
			if file == "" {
				return usagef(cmd, "-f FILE is required (use -f - for standard input)")
			}
			var data []byte
			var err error
			if file == "-" {
				data, err = io.ReadAll(a.in)
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return err
			}
			req, err := parseCreateFile(data)
			if err != nil {
				name := file
				if name == "-" {
					name = "standard input"
				}
				return fmt.Errorf("%s: %w", name, err)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			g, created, err := c.CreateGroup(cmd.Context(), req)
			if err != nil {
				return err
			}
			if !created {
				fmt.Fprintf(a.err, "Group %s already existed for client token %q.\n", g.ID, req.ClientToken)
			}
			if output == outputJSON {
				return a.printJSON(g)
			}
			fmt.Fprintln(a.out, g.ID)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the file to read (- for standard input)")
	addOutputFlag(cmd, &output)
	return cmd
}

// parseCreateFile reads one create request from YAML or JSON (JSON is YAML)
// and rejects fields that the request does not have.
func parseCreateFile(data []byte) (api.CreateGroupRequest, error) {
	var req api.CreateGroupRequest
	if len(bytes.TrimSpace(data)) == 0 {
		return req, errors.New("the file is empty")
	}
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return req, fmt.Errorf("not valid YAML or JSON: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("not a valid group: %w (the top level holds name, labels, clientToken and spec; the spec follows the Kubernetes pod spec)", err)
	}
	if dec.More() {
		return req, errors.New("holds more than one document: create one group per file")
	}
	if len(req.Spec.Containers) == 0 {
		return req, errors.New("spec.containers is empty: a group needs at least one container")
	}
	return req, nil
}

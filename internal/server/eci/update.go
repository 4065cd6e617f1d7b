package eci

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strings"

	"github.com/skiffhq/skiff/api"
)

// updateContainerGroup translates UpdateContainerGroup into the service
// layer's update. UpdateType RenewUpdate (the default) replaces the
// group's containers with those given; IncrementalUpdate merges each given
// container, by name, into the group's (its Image may then be left out).
// Volumes, when given, replace the group's volumes. The service decides
// what the change means: tags and restart policy in place, anything else a
// restart of the group with the new spec (status Updating).
func (h *Handler) updateContainerGroup(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	id := p.required("ContainerGroupId")
	req := decodeUpdate(p)
	if p.err != nil {
		return nil, p.err
	}
	if _, err := h.cfg.Backend.UpdateGroupSpec(ctx, c, id, req); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

func decodeUpdate(p *params) *api.UpdateGroupRequest {
	normalizeSDKLists(p)
	req := &api.UpdateGroupRequest{}
	switch p.oneOf("UpdateType", "RenewUpdate", "IncrementalUpdate") {
	case "IncrementalUpdate":
		req.Incremental = true
	}
	if len(p.str("ClientToken")) > 64 {
		p.fail(invalid("ClientToken", "at most 64 characters"))
	}
	req.Tags = tags(p, "Tag")
	req.RestartPolicy = api.RestartPolicy(p.oneOf("RestartPolicy", "Always", "OnFailure", "Never"))
	req.ActiveDeadlineSeconds = p.int("ActiveDeadlineSeconds", 1, math.MaxInt32)
	req.TerminationGracePeriodSeconds = p.int("TerminationGracePeriodSeconds", 0, api.MaxGracePeriod)
	if f := p.float("Cpu", 0.01, 1024); f != nil {
		v := cpuOf(f)
		req.CPU = &v
	}
	if f := p.float("Memory", 0.01, 4096); f != nil {
		v := memOf(f)
		req.Memory = &v
	}
	for _, n := range p.indices("Container") {
		req.Containers = append(req.Containers, decodeUpdatedContainer(p, fmt.Sprintf("Container.%d.", n), false, req.Incremental))
	}
	for _, n := range p.indices("InitContainer") {
		req.InitContainers = append(req.InitContainers, decodeUpdatedContainer(p, fmt.Sprintf("InitContainer.%d.", n), true, req.Incremental))
	}
	for _, n := range p.indices("Volume") {
		if v, ok := decodeVolume(p, fmt.Sprintf("Volume.%d.", n)); ok {
			req.Volumes = append(req.Volumes, v)
		}
	}
	if len(p.indices("ImageRegistryCredential")) > 0 {
		req.ImageRegistryCredentials = decodeRegistryCredentials(p)
	}
	req.DNSConfig = decodeDNS(p)
	return req
}

// keepImage stands in for an image an incremental update leaves out.
const keepImage = "\x00keep"

// decodeUpdatedContainer is decodeContainer, where an incremental update
// may leave the image out (it keeps the container's).
func decodeUpdatedContainer(p *params, f string, init, incremental bool) api.Container {
	if incremental && p.str(f+"Image") == "" {
		p.m[f+"Image"] = keepImage
		defer delete(p.m, f+"Image")
	}
	c := decodeContainer(p, f, init)
	if c.Image == keepImage {
		c.Image = ""
	}
	return c
}

// sdkBareItem matches the list items the Go SDK (v1.63) sends bare for
// UpdateContainerGroup, where its request struct types a container's
// EnvironmentVar, Port and VolumeMount as []string: Container.1.Port.1=80.
var sdkBareItem = regexp.MustCompile(`^((?:Init)?Container\.\d+\.(EnvironmentVar|Port|VolumeMount)\.\d+)$`)

// normalizeSDKLists rewrites such bare items into the documented form
// (…EnvironmentVar.N.Key / .Value and so on). A bare item is either a JSON
// object with the documented field names ({"Key":"A","Value":"1"},
// {"Name":"data","MountPath":"/data"}), or the short forms "KEY=VALUE" for
// a variable and "PORT[/PROTOCOL]" for a port.
func normalizeSDKLists(p *params) {
	changed := false
	for k, v := range p.m {
		m := sdkBareItem.FindStringSubmatch(k)
		if m == nil {
			continue
		}
		delete(p.m, k)
		changed = true
		var obj map[string]any
		if strings.HasPrefix(strings.TrimSpace(v), "{") {
			if err := json.Unmarshal([]byte(v), &obj); err != nil {
				p.fail(invalid(k, "must be a JSON object with the item's fields"))
				continue
			}
			for fk, fv := range obj {
				p.m[k+"."+fk] = strings.Trim(fmt.Sprint(fv), "\"")
			}
			continue
		}
		switch m[2] {
		case "EnvironmentVar":
			key, val, ok := strings.Cut(v, "=")
			if !ok || key == "" {
				p.fail(invalid(k, "must be KEY=VALUE or a JSON object with Key and Value"))
				continue
			}
			p.m[k+".Key"], p.m[k+".Value"] = key, val
		case "Port":
			port, proto, _ := strings.Cut(v, "/")
			p.m[k+".Port"] = port
			if proto != "" {
				p.m[k+".Protocol"] = proto
			}
		default:
			p.fail(invalid(k, `must be a JSON object such as {"Name":"data","MountPath":"/data"}`))
		}
	}
	if changed {
		p.children = nil
	}
}

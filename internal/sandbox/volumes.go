package sandbox

import "context"

// VolumeUpdater is implemented by runtimes that can replace the files of a
// running sandbox's "files" volume in place (Kubernetes' live ConfigMap,
// Secret and token updates), without a process in the sandbox.
type VolumeUpdater interface {
	// UpdateVolume makes files the whole content of the files volume name
	// of sandbox sandboxID. The swap is atomic: a reader in a container
	// sees every old file or every new one, never a mix. Files keep their
	// modes and belong to the container's root user, as at create.
	// A missing sandbox: ErrNotFound; a volume that is not a files volume,
	// or a bad path: ErrInvalid.
	UpdateVolume(ctx context.Context, sandboxID, name string, files []File) error
}

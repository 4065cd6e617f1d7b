// Package image is a host's image store: a content-addressed blob store for
// manifests and configs, plus one read-only snapshot directory per layer,
// unpacked once and shared by every container group as an overlayfs lowerdir.
//
// Images come in through Import (an OCI image layout or a docker-archive
// tarball), through Pull (from an OCI or Docker registry: tags, digests,
// multi-platform indexes, credentials, retries; concurrent pulls of one
// image share one download) or through Put (any go-containerregistry
// v1.Image). Every blob is checked against its digest, and
// every layer against its diffID, before anything made from it becomes
// visible. Resolve turns a reference into the snapshot directories and the
// run configuration a sandbox needs. See README.md for the layout on disk.
package image

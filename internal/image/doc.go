// Package image is a host's image store: a content-addressed blob store for
// manifests and configs, plus one read-only snapshot directory per layer,
// unpacked once and shared by every container group as an overlayfs lowerdir.
//
// Images come in through Import (an OCI image layout or a docker-archive
// tarball) or through Put (any go-containerregistry v1.Image, such as one
// pulled from a registry). Every blob is checked against its digest, and
// every layer against its diffID, before anything made from it becomes
// visible. Resolve turns a reference into the snapshot directories and the
// run configuration a sandbox needs. See README.md for the layout on disk.
package image

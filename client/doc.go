// Package client is the typed Go client for skiff's native REST API: one
// method per route, every request signed with the account's access key
// (api.SignRequest), and every non-2xx answer returned as an error that
// unwraps to *api.Error.
package client

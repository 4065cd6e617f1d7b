package server

import _ "embed"

// openAPIDoc describes the native API; served at /openapi.json.
//
//go:embed openapi.json
var openAPIDoc []byte

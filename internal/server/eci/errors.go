package eci

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/skiffhq/skiff/internal/errdefs"
)

// Error is an ECI error reply: the HTTP status and ECI's code and message.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func missing(param string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "MissingParameter",
		Message: fmt.Sprintf("The input parameter %q that is mandatory for processing this request is not supplied.", param)}
}

func invalid(param, why string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "InvalidParameter",
		Message: fmt.Sprintf("The specified parameter %q is not valid: %s.", param, why)}
}

func unsupported(param, why string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "InvalidParameter.NotSupported",
		Message: fmt.Sprintf("The specified parameter %q is not supported: %s.", param, why)}
}

// Signature and identity errors, with the codes Alibaba Cloud's gateway uses.
var (
	errSignature = &Error{Status: http.StatusBadRequest, Code: "SignatureDoesNotMatch",
		Message: "The request signature does not conform to Aliyun standards."}
	errNonceUsed = &Error{Status: http.StatusBadRequest, Code: "SignatureNonceUsed",
		Message: "The request signature nonce has been used."}
	errTimestamp = &Error{Status: http.StatusBadRequest, Code: "InvalidTimeStamp.Expired",
		Message: "Specified time stamp or date value is expired."}
	errBadTimestamp = &Error{Status: http.StatusBadRequest, Code: "InvalidTimeStamp.Format",
		Message: "Specified time stamp or date value is not well formatted."}
	errKey = &Error{Status: http.StatusNotFound, Code: "InvalidAccessKeyId.NotFound",
		Message: "Specified access key is not found or is disabled."}
	errMethod = &Error{Status: http.StatusBadRequest, Code: "UnsupportedSignatureMethod",
		Message: "SignatureMethod must be HMAC-SHA1 and SignatureVersion 1.0."}
	errVersion = &Error{Status: http.StatusBadRequest, Code: "InvalidVersion",
		Message: "Specified parameter Version is not valid: this endpoint serves ECI 2018-08-08."}
)

func noAction(a string) *Error {
	return &Error{Status: http.StatusNotFound, Code: "InvalidAction.NotFound",
		Message: fmt.Sprintf("Specified api %q is not found, please check your url and method.", a)}
}

// fromErr maps a service-layer error (an errdefs class) to ECI's code.
// Only the user-safe message travels; the rest is logged by the caller.
func fromErr(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	msg := errdefs.Message(err)
	switch {
	case errors.Is(err, errdefs.ErrInvalid):
		return &Error{Status: http.StatusBadRequest, Code: "InvalidParameter", Message: msg}
	case errors.Is(err, errdefs.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Code: "ResourceNotFound", Message: msg}
	case errors.Is(err, errdefs.ErrIncorrectStat):
		// ECI's reference (DeleteContainerGroup) lists IncorrectStatus as 400.
		return &Error{Status: http.StatusBadRequest, Code: "IncorrectStatus", Message: msg}
	case errors.Is(err, errdefs.ErrQuota):
		return &Error{Status: http.StatusForbidden, Code: "QuotaExceeded", Message: msg}
	case errors.Is(err, errdefs.ErrConflict):
		return &Error{Status: http.StatusBadRequest, Code: "InvalidParameter.Duplicated", Message: msg}
	case errors.Is(err, errdefs.ErrForbidden):
		return &Error{Status: http.StatusForbidden, Code: "Forbidden", Message: msg}
	case errors.Is(err, errdefs.ErrUnauthorized):
		return &Error{Status: http.StatusForbidden, Code: "Forbidden.AccessKey", Message: msg}
	case errors.Is(err, errdefs.ErrTimeout):
		return &Error{Status: http.StatusGatewayTimeout, Code: "OperationTimeout", Message: msg}
	case errors.Is(err, errdefs.ErrTooLarge):
		return &Error{Status: http.StatusBadRequest, Code: "InvalidParameter.TooLarge", Message: msg}
	case errors.Is(err, errdefs.ErrNotSupported):
		return &Error{Status: http.StatusBadRequest, Code: "UnsupportedOperation", Message: msg}
	case errors.Is(err, errdefs.ErrUnavailable):
		return &Error{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailable", Message: msg}
	}
	return &Error{Status: http.StatusInternalServerError, Code: "InternalError", Message: msg}
}

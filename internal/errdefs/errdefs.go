// Package errdefs defines skiff's error classes. Code anywhere wraps one of
// them with %w; only the API boundary turns a class into an HTTP status and
// an error code. Nobody matches on error text.
package errdefs

import (
	"errors"
	"net/http"
)

// The classes.
var (
	ErrInvalid       = errors.New("invalid argument")
	ErrNotFound      = errors.New("not found")
	ErrConflict      = errors.New("conflict")
	ErrUnauthorized  = errors.New("unauthorized")
	ErrForbidden     = errors.New("forbidden")
	ErrQuota         = errors.New("quota exceeded")
	ErrUnavailable   = errors.New("unavailable")
	ErrTimeout       = errors.New("timeout")
	ErrTooLarge      = errors.New("request too large")
	ErrNotSupported  = errors.New("not supported")
	ErrIncorrectStat = errors.New("incorrect status")
)

// Class maps err to its HTTP status and wire code.
func Class(err error) (status int, code string) {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest, "InvalidParameter"
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound, "NotFound"
	case errors.Is(err, ErrConflict):
		return http.StatusConflict, "Conflict"
	case errors.Is(err, ErrIncorrectStat):
		return http.StatusConflict, "IncorrectStatus"
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized, "Unauthorized"
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden, "Forbidden"
	case errors.Is(err, ErrQuota):
		return http.StatusForbidden, "QuotaExceeded"
	case errors.Is(err, ErrTimeout):
		return http.StatusRequestTimeout, "WaitTimeout"
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge, "RequestTooLarge"
	case errors.Is(err, ErrNotSupported):
		return http.StatusNotImplemented, "NotSupported"
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable, "ServiceUnavailable"
	}
	return http.StatusInternalServerError, "InternalError"
}

// User is an error whose text is safe to show to the caller. Errors of
// other kinds reach the caller only as their class; their text is logged.
type User struct {
	Msg   string
	Class error
}

func (e *User) Error() string { return e.Msg }
func (e *User) Unwrap() error { return e.Class }

// Invalid returns a user-visible ErrInvalid with msg.
func Invalid(msg string) error { return &User{Msg: msg, Class: ErrInvalid} }

// Userf wraps class with a user-visible message.
func Userf(class error, msg string) error { return &User{Msg: msg, Class: class} }

// Message returns the text to show to the caller for err.
func Message(err error) string {
	var u *User
	if errors.As(err, &u) {
		return u.Msg
	}
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrConflict), errors.Is(err, ErrInvalid),
		errors.Is(err, ErrIncorrectStat), errors.Is(err, ErrTimeout), errors.Is(err, ErrQuota),
		errors.Is(err, ErrTooLarge), errors.Is(err, ErrUnauthorized), errors.Is(err, ErrForbidden):
		// These are built from our own messages ("group \"x\": not found").
		return err.Error()
	}
	_, code := Class(err)
	if code == "ServiceUnavailable" {
		return "the service is temporarily unavailable; retry shortly"
	}
	return "internal error; the server log has the details under this request id"
}

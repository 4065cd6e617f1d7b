package linux

import (
	"errors"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// watcher learns of container exits. It holds a pidfd per running
// container in one epoll set, waited on by one goroutine: an exit costs
// O(1) whatever the number of containers, and works the same for our own
// children and for containers adopted after a restart (which are not our
// children and cannot be waited for with wait4).
//
// It does not wait4(-1): other parts of the agent start processes with
// os/exec and must get their own exit statuses.
type watcher struct {
	epfd int
	wake int // eventfd: Close
	mu   sync.Mutex
	fds  map[int32]func()
	done chan struct{}
}

func newWatcher() (*watcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, err
	}
	w := &watcher{epfd: epfd, wake: wake, fds: map[int32]func(){}, done: make(chan struct{})}
	go w.loop()
	return w, nil
}

// add calls onExit (on its own goroutine) once the process of pidfd has
// exited. The caller keeps owning pidfd.
func (w *watcher) add(pidfd int, onExit func()) error {
	w.mu.Lock()
	w.fds[int32(pidfd)] = onExit
	w.mu.Unlock()
	// One-shot: after the exit, the fd is not reported again.
	err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, pidfd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(pidfd)})
	if err != nil {
		w.mu.Lock()
		delete(w.fds, int32(pidfd))
		w.mu.Unlock()
	}
	return err
}

// remove forgets pidfd, before its owner closes it.
func (w *watcher) remove(pidfd int) {
	w.mu.Lock()
	delete(w.fds, int32(pidfd))
	w.mu.Unlock()
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, pidfd, nil)
}

func (w *watcher) loop() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == w.wake {
				return
			}
			w.mu.Lock()
			fn := w.fds[ev.Fd]
			delete(w.fds, ev.Fd)
			w.mu.Unlock()
			if fn != nil {
				go fn()
			}
		}
	}
}

func (w *watcher) close() {
	var one = [8]byte{1}
	_, _ = unix.Write(w.wake, one[:])
	<-w.done
	unix.Close(w.epfd)
	unix.Close(w.wake)
}

// exitQueue hands exit events to the Exits channel without ever blocking
// the code that produces them, however slow the consumer.
type exitQueue struct {
	mu     sync.Mutex
	q      []sandbox.ExitEvent
	notify chan struct{}
	out    chan sandbox.ExitEvent
	stop   chan struct{}
	done   chan struct{}
}

func newExitQueue() *exitQueue {
	e := &exitQueue{
		notify: make(chan struct{}, 1),
		out:    make(chan sandbox.ExitEvent),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go e.loop()
	return e
}

func (e *exitQueue) push(ev sandbox.ExitEvent) {
	e.mu.Lock()
	e.q = append(e.q, ev)
	e.mu.Unlock()
	select {
	case e.notify <- struct{}{}:
	default:
	}
}

func (e *exitQueue) loop() {
	defer close(e.done)
	defer close(e.out)
	for {
		e.mu.Lock()
		var ev sandbox.ExitEvent
		ok := len(e.q) > 0
		if ok {
			ev = e.q[0]
			e.q = e.q[1:]
		}
		e.mu.Unlock()
		if !ok {
			select {
			case <-e.notify:
				continue
			case <-e.stop:
				return
			}
		}
		select {
		case e.out <- ev:
		case <-e.stop:
			return
		}
	}
}

func (e *exitQueue) close() {
	close(e.stop)
	<-e.done
}

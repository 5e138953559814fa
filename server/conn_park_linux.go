package server

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The parker (conn_park.go): one epoll instance, for every parked session
// of the process, whose own descriptor waits in the runtime's poller like
// any socket; one goroutine (run) takes its events.
//
// A session's socket is in the set, edge-triggered, only while it is
// parked: added (EPOLL_CTL_ADD, which reports bytes that arrived before
// it) when it parks, removed when it is woken. The parker reads at most
// len(peek) bytes a time: fewer means the socket is drained, and whatever
// arrives next is a new edge, so a pong costs one recv and no epoll call.
// An event that arrives late finds its slot empty, or holding another
// parked session, whose socket is then read in vain (EAGAIN): harmless.
//
// A parked session is owned by the parker: nothing reads its socket but
// the parker's goroutine, and only while the session's state is
// parkChecking. Waking it (wake) takes it out of its slot, once: whoever
// finds it parked starts its reader (conn.resume), and a wake that finds
// it being checked is done once the check ends.
type parker struct {
	epfd int
	raw  syscall.RawConn // of epfd, in the runtime's poller

	mu    sync.Mutex
	slots []*flushConn // slot i: the session parked there (nil: free)
	free  []int32      // free slots

	cur   *flushConn // the session being checked (run's goroutine only)
	curN  int
	curE  error
	recvF func(fd uintptr)
}

// parkEvents is what a parked socket waits for: bytes, the peer's
// shutdown; edge-triggered (EPOLLET is the sign bit: not a constant a
// uint32 takes).
var parkEvents = uint32(syscall.EPOLLIN|syscall.EPOLLRDHUP) | 1<<31

// Park states (flushConn.pstate).
const (
	parkNone     = iota // the session's reader, or a goroutine about to be it, reads
	parkParked          // in a slot, owned by the parker
	parkChecking        // the parker's goroutine is reading what arrived
)

var (
	parkerOnce sync.Once
	theParker  *parker
)

// getParker returns the process's parker, made on first use; nil if the
// system refused one (sessions then wait in NextReader).
func getParker() *parker {
	parkerOnce.Do(func() {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return
		}
		if err := syscall.SetNonblock(epfd, true); err != nil {
			syscall.Close(epfd)
			return
		}
		f := os.NewFile(uintptr(epfd), "sigil-parker")
		raw, err := f.SyscallConn()
		if err != nil {
			f.Close()
			return
		}
		p := &parker{epfd: epfd, raw: raw}
		p.recvF = func(fd uintptr) {
			for {
				n, err := recvNB(fd, p.cur.peek[:])
				if err != syscall.EINTR {
					p.curN, p.curE = max(n, 0), err
					return
				}
			}
		}
		theParker = p
		go p.run(f)
	})
	return theParker
}

// run takes the parker's events, for ever.
func (p *parker) run(keep *os.File) {
	events := make([]syscall.EpollEvent, 256)
	n := 0
	wait := func(fd uintptr) bool {
		var err error
		n, err = syscall.EpollWait(int(fd), events, 0)
		if err != nil {
			n = 0
		}
		return n > 0 // none yet: the runtime's poller waits for one
	}
	for {
		if err := p.raw.Read(wait); err != nil {
			keep.Close()
			return
		}
		for _, ev := range events[:n] {
			p.check(ev.Fd, ev.Events)
		}
	}
}

// check reads what arrived on the socket of the session in slot i: empty
// pongs are consumed (the idle deadline moves, as the pong handler moves
// the read deadline) and the session stays parked; anything else (bytes
// of a frame, EOF, an error, the peer's shutdown that came with the
// pongs) wakes its reader, with the bytes read ahead of the socket's.
func (p *parker) check(i int32, events uint32) {
	p.mu.Lock()
	if int(i) >= len(p.slots) || p.slots[i] == nil || p.slots[i].pstate.Load() != parkParked {
		p.mu.Unlock()
		return
	}
	f := p.slots[i]
	f.pstate.Store(parkChecking)
	p.mu.Unlock()

	p.cur = f
	if err := f.raw.Control(p.recvF); err != nil {
		p.curN, p.curE = 0, err
	}
	p.cur = nil
	n, err := p.curN, p.curE
	wake, reset, pongs := false, false, false
	switch {
	case err == syscall.EAGAIN: // nothing after all
	case err != nil || n == 0 || events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0:
		wake = true // an error, EOF, or one after what was read: the reader meets it
		if err == nil && n > 0 {
			f.unread(f.peek[:n])
		}
	default:
		k := 0
		for n-k >= emptyPong && isEmptyPong(f.peek[k:n]) {
			k += emptyPong
		}
		pongs = k > 0
		if k < n {
			f.unread(f.peek[k:n])
			wake, reset = true, true
		}
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if !wake && !f.pwake {
		if pongs {
			// The idle deadline moves; the wheel, set for the old one,
			// is moved when it comes (expired): nothing else per pong.
			f.tdl = time.Now().Add(f.c.idleLimit()).UnixNano()
		}
		f.pstate.Store(parkParked)
		return
	}
	f.pwake = false
	p.unparkLocked(f)
	f.c.resume(reset || pongs)
}

// ctl adds f's socket to the set, or removes it: false if the socket is
// closed or the set refuses it. p.mu is held: the epoll_ctl of one socket
// are never concurrent.
func (p *parker) ctl(f *flushConn, op int) bool {
	f.ctlOp = op
	return f.raw.Control(f.ctlFn) == nil && f.ctlErr == nil
}

// unparkLocked takes f out of its slot, and its socket out of the set;
// p.mu is held.
func (p *parker) unparkLocked(f *flushConn) {
	p.slots[f.slot] = nil
	p.free = append(p.free, f.slot)
	f.pstate.Store(parkNone)        // left on the idle wheel: expired finds it not parked
	p.ctl(f, syscall.EPOLL_CTL_DEL) // fails only once the socket is closed, which takes it out
}

// park hands f's session to the parker until its socket has something
// other than empty pongs, or it is closed, or its read deadline passes:
// false if it could not (the reader then reads on). On true the caller
// must not touch the reader's state: another goroutine may be the reader
// already.
func (f *flushConn) park() bool {
	p := getParker()
	if p == nil || f.c == nil {
		return false
	}
	first := f.ctlFn == nil
	if first {
		f.ctlFn = func(fd uintptr) {
			ev := syscall.EpollEvent{Events: parkEvents, Fd: f.slot}
			f.ctlErr = syscall.EpollCtl(p.epfd, f.ctlOp, int(fd), &ev)
		}
	}

	p.mu.Lock()
	if n := len(p.free); n > 0 {
		f.slot = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		f.slot = int32(len(p.slots))
		p.slots = append(p.slots, nil)
	}
	if !p.ctl(f, syscall.EPOLL_CTL_ADD) {
		// The socket is closed, or the set refuses it: read on.
		p.free = append(p.free, f.slot)
		p.mu.Unlock()
		return false
	}
	p.slots[f.slot] = f
	if f.tdl = f.rdl.Load(); f.tdl != 0 {
		f.c.srv.sched.set(f.c, dutyIdle, f.tdl)
	}
	f.pstate.Store(parkParked)
	p.mu.Unlock()
	// A close or Shutdown that set the read deadline before the session
	// was in its slot did not wake it: look again now that it is.
	if f.c.closing() {
		f.wake()
	}
	return true
}

// wake starts the reader of f's session if it is parked (at once), or
// once the parker's check of it ends; nothing if it is not parked.
func (f *flushConn) wake() {
	if f.pstate.Load() == parkNone {
		return
	}
	p := theParker
	p.mu.Lock()
	p.wakeUnlock(f)
}

// wakeUnlock starts the reader of f's session if it is parked, or has it
// started once the check of it ends; p.mu is held, and released.
func (p *parker) wakeUnlock(f *flushConn) {
	switch f.pstate.Load() {
	case parkParked:
		p.unparkLocked(f)
		p.mu.Unlock()
		f.c.resume(false)
		return
	case parkChecking:
		f.pwake = true
	}
	p.mu.Unlock()
}

// expired is the sweeper's when the session's idle deadline on the wheel
// has come (schedule.go). If pongs moved it since (tdl), the session goes
// back on the wheel at the new one; otherwise the deadline has passed
// with nothing but pongs, or nothing at all: its reader meets the
// deadline (the socket's, which the pongs did not move, is no later).
// Nothing, if the session is not parked any more.
func (f *flushConn) expired() {
	p := theParker
	p.mu.Lock()
	if f.tdl == 0 {
		p.mu.Unlock()
		return
	}
	if left := f.tdl - time.Now().UnixNano(); left > 0 {
		// Pongs moved the deadline: wait for the new one.
		if f.pstate.Load() != parkNone {
			f.c.srv.sched.set(f.c, dutyIdle, f.tdl)
		}
		p.mu.Unlock()
		return
	}
	p.wakeUnlock(f)
}

// parked reports whether f's session is parked (tests).
func (f *flushConn) parked() bool { return f.pstate.Load() != parkNone }

// SetReadDeadline sets the socket's read deadline; a parked session's
// reader is woken to meet it (a close, Shutdown), as a reader blocked in
// a read would.
func (f *flushConn) SetReadDeadline(t time.Time) error {
	err := f.Conn.SetReadDeadline(t)
	var ns int64 // none
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	f.rdl.Store(ns)
	f.wake()
	return err
}

// Close closes the socket; a parked session's reader is woken to meet it.
func (f *flushConn) Close() error {
	err := f.Conn.Close()
	f.wake()
	return err
}

// parkState is what a flushConn holds for parking.
type parkState struct {
	rdl    atomic.Int64
	pstate atomic.Uint32
	slot   int32
	pwake  bool
	ctlOp  int
	ctlErr error
	ctlFn  func(fd uintptr)
	tdl    int64 // the idle deadline, Unix ns (p.mu): on the sweeper's idle wheel, moved lazily
}

// canPeek reports whether the session's socket can be parked.
func (f *flushConn) canPeek() bool { return f.raw != nil && f.br != nil }

// canReadAhead reports whether Read can take what the socket holds with a
// read that does not block (conn_read.go).
func (f *flushConn) canReadAhead() bool { return f.raw != nil }

// readNow reads what the socket holds into b, up to len(b), with one
// recv(2) that does not block, made through the socket's raw.Read (so the
// read deadline, and a close, are honoured as by any read): n > 0; or 0
// and nil at EOF; or an error: syscall.EAGAIN when there is nothing yet.
func (f *flushConn) readNow(b []byte) (int, error) { return f.recv(b, false) }

// waitRead waits until the socket has bytes to read (or EOF, an error,
// the read deadline, or the socket is closed), and reads up to
// len(f.peek) of them into f.peek. Only waitFrame calls it, while
// gorilla does not read.
func (f *flushConn) waitRead() (int, error) { return f.recv(f.peek[:], true) }

// recv makes a recvOp: one attempt, or while wait, an attempt each time
// the poller says the socket is readable, until one finds bytes, EOF or
// an error.
func (f *flushConn) recv(b []byte, wait bool) (int, error) {
	f.op = recvOp{buf: b, wait: wait}
	err := f.raw.Read(f.opFn)
	n, rerr := f.op.n, f.op.err
	f.op.buf = nil
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// recvOp is a recv(2) that does not block: its buffer and result.
type recvOp struct {
	buf  []byte
	wait bool
	n    int
	err  error
}

// newRecvFn is the function raw.Read calls for recv, made once per
// socket: false asks raw.Read to wait for the socket and call again.
func (f *flushConn) newRecvFn() func(fd uintptr) bool {
	return func(fd uintptr) bool {
		for {
			n, err := recvNB(fd, f.op.buf)
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN && f.op.wait:
				return false
			}
			f.op.n, f.op.err = max(n, 0), err
			return true
		}
	}
}

// shortDeadline makes the socket's read deadline until, if that comes
// before the session's own (rdl), without recording it: the reader's
// wait in waitFrame. It reports whether it did.
func (f *flushConn) shortDeadline(until time.Time) bool {
	if rdl := f.rdl.Load(); rdl != 0 && rdl <= until.UnixNano() {
		return false
	}
	_ = f.Conn.SetReadDeadline(until)
	return true
}

// ownDeadlineAhead reports whether the session's read deadline (rdl, not
// waitFrame's shorter one) is still ahead.
func (f *flushConn) ownDeadlineAhead() bool {
	rdl := f.rdl.Load()
	return rdl == 0 || time.Now().UnixNano() < rdl
}

// noteDeadline records t as the session's read deadline without setting
// the socket's (a pong while waitFrame's shortDeadline holds it).
func (f *flushConn) noteDeadline(t time.Time) { f.rdl.Store(t.UnixNano()) }

// restoreDeadline makes the socket's read deadline the session's own
// again, after shortDeadline.
func (f *flushConn) restoreDeadline() {
	if rdl := f.rdl.Load(); rdl != 0 {
		_ = f.Conn.SetReadDeadline(time.Unix(0, rdl))
	} else {
		_ = f.Conn.SetReadDeadline(time.Time{})
	}
}

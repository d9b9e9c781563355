package integration

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// An exerciser in the spirit of fsx (xfstests, LTP): one file on a real
// mount takes a seeded random sequence of operations, and after each one
// the affected range, the size, and every fsxFullEvery operations the whole
// file are checked against an in-memory model. A mismatch prints the last
// operations, a hex diff and the seed to replay:
//
//	go test -run 'TestFSX$' ./integration/ -fsx.seed=N -fsx.ops=M
var (
	fsxOps  = flag.Int("fsx.ops", envInt("JFS_FSX_OPS", 3000), "operations of each fsx run (env JFS_FSX_OPS)")
	fsxSeed = flag.Uint64("fsx.seed", uint64(envInt("JFS_FSX_SEED", 0)), "seed of the fsx runs; 0 picks one (env JFS_FSX_SEED)")
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

const (
	fsxMaxLen    = 1 << 20 // the file's usual largest size
	fsxMaxOp     = 64 << 10
	fsxBigLen    = 5 << 20 // a big truncate grows the file to this first
	fsxFullEvery = 25
)

// TestFSX runs the exerciser on a cluster with the default 64 KiB blocks.
func TestFSX(t *testing.T) { runFSX(t) }

// TestFSXSmallBlocks runs it with 4 KiB blocks, so that operations cross
// block boundaries often, and a big truncate drops more than 1024 blocks,
// which are freed in the background.
func TestFSXSmallBlocks(t *testing.T) { runFSX(t, "--block-size", "4K") }

func runFSX(t *testing.T, jfsdArgs ...string) {
	seed := *fsxSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("fsx: seed %d, %d operations (replay: -fsx.seed=%d)", seed, *fsxOps, seed)
	pc := startProcCluster(t, 3, jfsdArgs...)
	a, b := startMount(t, pc), startMount(t, pc)
	x := &fsx{t: t, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), seed: seed,
		path: a.path("f"), other: a.path("g"), second: b.path("f")}
	x.open(syscall.O_CREAT)
	g, err := unix.Open(x.other, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	x.gfd = g
	defer func() { unix.Close(x.fd); unix.Close(x.gfd) }()
	x.fill(x.gfd, &x.g, 0, x.rnd.Int64N(fsxMaxLen)+1)

	start := time.Now()
	for i := range *fsxOps {
		// Every run has a big truncate at least once.
		x.step(i == *fsxOps/2)
		if tenth := max(*fsxOps/10, 1); (i+1)%tenth == 0 && *fsxOps >= 10000 {
			t.Logf("fsx: %d operations in %v", i+1, time.Since(start).Round(time.Second))
		}
	}
	x.checkAll("at the end")
	x.close()
	x.checkSecond()
	t.Logf("fsx: %d operations in %v; counts: %v", *fsxOps, time.Since(start).Round(time.Millisecond), x.counts)
}

// fsx is one run: the file under test (f, through fd), a second file g on
// the same mount for copies between files, and f's path on a second mount.
type fsx struct {
	t                   *testing.T
	rnd                 *rand.Rand
	seed                uint64
	path, other, second string
	fd, gfd             int
	appending           bool // fd was opened with O_APPEND
	f, g                fsxModel
	log                 fsxLog
	counts              map[string]int
	sinceFull           int
}

// The operations and their weights.
var fsxOpTable = []struct {
	name   string
	weight int
	do     func(*fsx)
}{
	{"read", 10, (*fsx).opRead},
	{"O_DIRECT read", 2, (*fsx).opDirectRead},
	{"write", 10, (*fsx).opWrite},
	{"write past EOF", 4, (*fsx).opWriteHole},
	{"truncate", 5, (*fsx).opTruncate},
	{"mmap read", 4, (*fsx).opMmapRead},
	{"mmap write", 4, (*fsx).opMmapWrite},
	{"fallocate", 3, func(x *fsx) { x.opFallocate(0) }},
	{"fallocate keep size", 3, func(x *fsx) { x.opFallocate(unix.FALLOC_FL_KEEP_SIZE) }},
	{"punch hole", 4, func(x *fsx) { x.opFallocate(unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE) }},
	{"zero range", 3, func(x *fsx) { x.opFallocate(unix.FALLOC_FL_ZERO_RANGE) }},
	{"zero range keep size", 3, func(x *fsx) { x.opFallocate(unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE) }},
	{"copy within", 3, (*fsx).opCopyWithin},
	{"copy between", 3, (*fsx).opCopyBetween},
	{"fsync", 2, (*fsx).opFsync},
	{"close and reopen", 2, (*fsx).opReopen},
	{"big truncate", 1, (*fsx).opBigTruncate},
}

var fsxWeights = func() int {
	n := 0
	for _, o := range fsxOpTable {
		n += o.weight
	}
	return n
}()

// step runs one random operation, or a big truncate when big is set, and
// checks the size and, regularly, the whole file.
func (x *fsx) step(big bool) {
	w := x.rnd.IntN(fsxWeights)
	i := 0
	for w >= fsxOpTable[i].weight {
		w -= fsxOpTable[i].weight
		i++
	}
	op := fsxOpTable[i]
	// A big truncate is rare: it costs writing megabytes.
	if op.name == "big truncate" && x.rnd.IntN(20) != 0 {
		op = fsxOpTable[0]
	}
	if big {
		op = fsxOpTable[len(fsxOpTable)-1]
	}
	if x.counts == nil {
		x.counts = map[string]int{}
	}
	x.counts[op.name]++
	op.do(x)
	x.log.next++
	x.checkSize()
	if x.sinceFull++; x.sinceFull >= fsxFullEvery {
		x.checkAll("regular check")
	}
}

// fail reports a mismatch or an unexpected error, with the log and seed.
func (x *fsx) fail(format string, args ...any) {
	x.t.Helper()
	x.t.Fatalf("fsx: operation %d: %s\nlast operations:\n%s\nreplay with -fsx.seed=%d",
		x.log.next, fmt.Sprintf(format, args...), &x.log, x.seed)
}

func (x *fsx) must(what string, err error) {
	x.t.Helper()
	if err != nil {
		x.fail("%s: %v", what, err)
	}
}

// pattern returns n bytes with no zero byte that name the operation.
func (x *fsx) pattern(n int64) []byte {
	b := make([]byte, n)
	k := byte(x.log.next%251) + 1
	for i := range b {
		b[i] = byte((int(k)+i)%255) + 1
	}
	return b
}

// offLen picks a range of up to fsxMaxOp bytes starting below limit.
func (x *fsx) offLen(limit int64) (int64, int64) {
	return x.rnd.Int64N(max(limit, 1)), x.rnd.Int64N(fsxMaxOp) + 1
}

// --- checks ---

// checkRange reads [off, off+n) of f through fd and compares it with the
// model.
func (x *fsx) checkRange(what string, off, n int64) {
	x.t.Helper()
	x.compare(what, x.fd, &x.f, off, n)
}

func (x *fsx) compare(what string, fd int, m *fsxModel, off, n int64) {
	x.t.Helper()
	want := m.slice(off, n)
	got := make([]byte, n)
	r, err := preadFull(fd, got, off)
	if err != nil {
		x.fail("%s: read %#x+%#x: %v", what, off, n, err)
	}
	if got = got[:r]; !bytes.Equal(got, want) {
		x.fail("%s: read %#x+%#x differs from the model (size %#x):\n%s", what, off, n, len(m.data), fsxDiff(off, want, got))
	}
}

// preadFull reads until b is full or the file ends.
func preadFull(fd int, b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) {
		r, err := unix.Pread(fd, b[n:], off+int64(n))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return n, err
		}
		if r == 0 {
			break
		}
		n += r
	}
	return n, nil
}

func (x *fsx) checkSize() {
	x.t.Helper()
	var st unix.Stat_t
	x.must("fstat", unix.Fstat(x.fd, &st))
	if st.Size != int64(len(x.f.data)) {
		x.fail("size %#x, the model says %#x", st.Size, len(x.f.data))
	}
}

func (x *fsx) checkAll(what string) {
	x.t.Helper()
	x.sinceFull = 0
	x.checkRange(what+", whole file", 0, int64(len(x.f.data))+1)
}

// checkSecond reads f through the second mount after a close: it must see
// every change made before the close.
func (x *fsx) checkSecond() {
	x.t.Helper()
	got, err := os.ReadFile(x.second)
	if err != nil {
		x.fail("read through the second mount: %v", err)
	}
	if !bytes.Equal(got, x.f.data) {
		x.fail("the second mount reads differently after the close:\n%s", fsxDiff(0, x.f.data, got))
	}
}

// --- open and close ---

func (x *fsx) open(extra int) {
	flags := unix.O_RDWR | unix.O_CLOEXEC | extra
	x.appending = extra&unix.O_APPEND != 0
	fd, err := unix.Open(x.path, flags, 0o644)
	x.must("open", err)
	x.fd = fd
}

func (x *fsx) close() {
	x.must("close", unix.Close(x.fd))
	x.fd = -1
}

func (x *fsx) opReopen() {
	extra := 0
	if x.rnd.IntN(3) == 0 {
		extra = unix.O_APPEND
	}
	x.log.add("close, check the second mount, reopen (append %v)", extra != 0)
	x.close()
	x.checkSecond()
	x.open(extra)
	x.checkAll("after reopening")
}

func (x *fsx) opFsync() {
	x.log.add("fsync")
	x.must("fsync", unix.Fsync(x.fd))
}

// --- data ---

func (x *fsx) opRead() {
	off, n := x.offLen(int64(len(x.f.data)))
	x.log.add("read %#x+%#x", off, n)
	x.checkRange("read", off, n)
}

// fill writes a pattern to [off, off+n) of fd, modelled by m.
func (x *fsx) fill(fd int, m *fsxModel, off, n int64) {
	x.t.Helper()
	b := x.pattern(n)
	w, err := unix.Pwrite(fd, b, off)
	if err == nil && int64(w) != n {
		err = fmt.Errorf("short write: %d of %d bytes", w, n)
	}
	x.must(fmt.Sprintf("pwrite %#x+%#x", off, n), err)
	m.write(off, b)
}

func (x *fsx) opWrite() {
	if x.appending {
		_, n := x.offLen(0)
		size := int64(len(x.f.data))
		if size+n > fsxMaxLen {
			x.truncateTo(x.rnd.Int64N(fsxMaxLen / 2))
			size = int64(len(x.f.data))
		}
		x.log.add("append %#x bytes at %#x", n, size)
		b := x.pattern(n)
		w, err := unix.Write(x.fd, b)
		if err == nil && int64(w) != n {
			err = fmt.Errorf("short write: %d of %d bytes", w, n)
		}
		x.must("append", err)
		x.f.write(size, b)
		x.checkRange("after the append", size, n)
		return
	}
	off, n := x.offLen(fsxMaxLen - fsxMaxOp)
	x.log.add("write %#x+%#x (size %#x)", off, n, len(x.f.data))
	x.fill(x.fd, &x.f, off, n)
	x.checkRange("after the write", max(off-16, 0), n+32)
}

// opWriteHole writes past the end, leaving a hole.
func (x *fsx) opWriteHole() {
	size := int64(len(x.f.data))
	if x.appending || size >= fsxMaxLen-fsxMaxOp {
		x.opWrite()
		return
	}
	off := size + x.rnd.Int64N(fsxMaxLen-fsxMaxOp-size) + 1
	n := x.rnd.Int64N(fsxMaxOp) + 1
	x.log.add("write past EOF %#x+%#x (size %#x)", off, n, size)
	x.fill(x.fd, &x.f, off, n)
	x.checkRange("after the write past EOF", max(size-16, 0), off+n-size+32)
}

func (x *fsx) truncateTo(size int64) {
	x.t.Helper()
	x.must(fmt.Sprintf("ftruncate %#x", size), unix.Ftruncate(x.fd, size))
	x.f.resize(size)
}

func (x *fsx) opTruncate() {
	old := int64(len(x.f.data))
	size := x.rnd.Int64N(fsxMaxLen + 1)
	x.log.add("truncate %#x -> %#x", old, size)
	x.truncateTo(size)
	x.checkRange("after the truncate", max(min(old, size)-16, 0), 64<<10)
}

// opBigTruncate grows f to fsxBigLen with stored data, then cuts it down to
// at most its usual size: with 4 KiB blocks that drops more than 1024
// blocks, which the cluster frees in the background.
func (x *fsx) opBigTruncate() {
	old := int64(len(x.f.data))
	size := x.rnd.Int64N(fsxMaxLen / 2)
	if x.rnd.IntN(2) == 0 {
		size = 0
	}
	x.log.add("big truncate: %#x -> allocate and write to %#x -> %#x", old, fsxBigLen, size)
	// Through a descriptor of its own: fd may be in O_APPEND mode, where
	// pwrite(2) appends.
	fd, err := unix.Open(x.path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	x.must("open for the big file", err)
	defer unix.Close(fd)
	if old < fsxBigLen {
		x.must("fallocate to the big size", unix.Fallocate(fd, 0, old, fsxBigLen-old))
		x.f.resize(fsxBigLen)
	}
	for off := int64(fsxMaxLen); off < fsxBigLen; off += 1 << 20 {
		at, b := off+x.rnd.Int64N(1<<20-64<<10), x.pattern(64<<10)
		x.must("pwrite the big file", pwriteAll(fd, b, at))
		x.f.write(at, b)
	}
	x.checkRange("the big file's tail", fsxBigLen-fsxMaxLen, fsxMaxLen)
	x.truncateTo(size)
	// What was cut must never read back, whatever is written there next.
	x.checkRange("after the big truncate", 0, fsxMaxLen)
}

func pwriteAll(fd int, b []byte, off int64) error {
	n, err := unix.Pwrite(fd, b, off)
	if err == nil && n != len(b) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(b))
	}
	return err
}

// --- mmap ---

// mapped maps f shared through a descriptor of its own (an O_APPEND file is
// opened for direct I/O, which the kernel may refuse to map shared), calls
// fn with the mapping, and unmaps.
func (x *fsx) mapped(prot int, fn func(m []byte)) {
	x.t.Helper()
	fd, err := unix.Open(x.path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	x.must("open for mmap", err)
	defer unix.Close(fd)
	m, err := unix.Mmap(fd, 0, len(x.f.data), prot, unix.MAP_SHARED)
	x.must("mmap", err)
	fn(m)
	x.must("munmap", unix.Munmap(m))
}

// opDirectRead reads a range through a descriptor opened with O_DIRECT,
// past the kernel's page cache.
func (x *fsx) opDirectRead() {
	off, n := x.offLen(int64(len(x.f.data)))
	x.log.add("O_DIRECT read %#x+%#x", off, n)
	fd, err := unix.Open(x.path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	x.must("open O_DIRECT", err)
	defer unix.Close(fd)
	x.compare("O_DIRECT read", fd, &x.f, off, n)
}

func (x *fsx) opMmapRead() {
	size := int64(len(x.f.data))
	if size == 0 {
		x.opRead()
		return
	}
	off, n := x.offLen(size)
	n = min(n, size-off)
	x.log.add("mmap read %#x+%#x", off, n)
	x.mapped(unix.PROT_READ, func(m []byte) {
		if got, want := m[off:off+n], x.f.data[off:off+n]; !bytes.Equal(got, want) {
			x.fail("mmap read %#x+%#x differs from the model:\n%s", off, n, fsxDiff(off, want, bytes.Clone(got)))
		}
	})
}

// opMmapWrite writes through a shared mapping and msyncs it. Now and then
// it first extends the file with ftruncate to write past the old end, as
// fsx does.
func (x *fsx) opMmapWrite() {
	size := int64(len(x.f.data))
	if x.rnd.IntN(4) == 0 && size < fsxMaxLen-fsxMaxOp {
		off, n := x.offLen(fsxMaxLen - fsxMaxOp)
		if off+n > size {
			x.log.add("truncate %#x -> %#x for an mmap write", size, off+n)
			x.truncateTo(off + n)
			size = off + n
		}
	}
	if size == 0 {
		x.opWrite()
		return
	}
	off, n := x.offLen(size)
	n = min(n, size-off)
	x.log.add("mmap write %#x+%#x, msync", off, n)
	b := x.pattern(n)
	x.mapped(unix.PROT_READ|unix.PROT_WRITE, func(m []byte) {
		copy(m[off:], b)
		x.must("msync", unix.Msync(m, unix.MS_SYNC))
	})
	x.f.write(off, b)
	x.checkRange("after the mmap write", max(off-16, 0), n+32)
}

// --- fallocate ---

func (x *fsx) opFallocate(mode uint32) {
	size := int64(len(x.f.data))
	off, n := x.offLen(min(size+fsxMaxOp, fsxMaxLen-fsxMaxOp))
	x.log.add("fallocate mode %#x %#x+%#x (size %#x)", mode, off, n, size)
	x.must(fmt.Sprintf("fallocate mode %#x %#x+%#x", mode, off, n), unix.Fallocate(x.fd, mode, off, n))
	if mode&unix.FALLOC_FL_KEEP_SIZE == 0 && off+n > size {
		x.f.resize(off + n)
	}
	if mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) != 0 {
		x.f.zero(off, n)
	}
	x.checkRange("after the fallocate", max(off-16, 0), n+32)
}

// --- copy_file_range ---

// copyRange copies n bytes from src at soff to dst at doff with
// copy_file_range(2), looping over short copies until n are copied or the
// source ends, and returns how many were.
func copyRange(src int, soff int64, dst int, doff int64, n int64) (int64, error) {
	var done int64
	for done < n {
		so, do := soff+done, doff+done
		c, err := unix.CopyFileRange(src, &so, dst, &do, int(n-done), 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return done, err
		}
		if c == 0 {
			break
		}
		done += int64(c)
	}
	return done, nil
}

// modelCopy applies a copy of n bytes from src at soff to dst at doff to
// the models and returns how many bytes the copy must move.
func modelCopy(src *fsxModel, soff int64, dst *fsxModel, doff, n int64) int64 {
	b := bytes.Clone(src.slice(soff, n))
	dst.write(doff, b)
	return int64(len(b))
}

func (x *fsx) opCopyWithin() {
	size := int64(len(x.f.data))
	if x.appending || size < 2 {
		x.opRead()
		return
	}
	// Linux refuses overlapping ranges of one file.
	soff := x.rnd.Int64N(size)
	n := min(x.rnd.Int64N(fsxMaxOp)+1, size-soff)
	doff := x.rnd.Int64N(fsxMaxLen - fsxMaxOp)
	if doff < soff+n && soff < doff+n {
		doff = soff + n + x.rnd.Int64N(fsxMaxOp)
	}
	x.log.add("copy within %#x+%#x -> %#x (size %#x)", soff, n, doff, size)
	c, err := copyRange(x.fd, soff, x.fd, doff, n)
	x.must("copy_file_range within the file", err)
	if want := modelCopy(&x.f, soff, &x.f, doff, n); c != want {
		x.fail("copy_file_range within the file copied %d bytes, want %d", c, want)
	}
	x.checkRange("after the copy within", max(doff-16, 0), n+32)
}

func (x *fsx) opCopyBetween() {
	toG := x.appending || x.rnd.IntN(2) == 0
	src, sm, dst, dm := x.fd, &x.f, x.gfd, &x.g
	if !toG {
		src, sm, dst, dm = x.gfd, &x.g, x.fd, &x.f
	}
	soff, n := x.offLen(int64(len(sm.data)))
	doff := x.rnd.Int64N(fsxMaxLen - fsxMaxOp)
	dir := "f -> g"
	if !toG {
		dir = "g -> f"
	}
	x.log.add("copy %s %#x+%#x -> %#x (sizes f %#x, g %#x)", dir, soff, n, doff, len(x.f.data), len(x.g.data))
	c, err := copyRange(src, soff, dst, doff, n)
	x.must("copy_file_range between files", err)
	if want := modelCopy(sm, soff, dm, doff, n); c != want {
		x.fail("copy_file_range %s copied %d bytes, want %d", dir, c, want)
	}
	x.compare("after the copy between files", dst, dm, max(doff-16, 0), n+32)
	if toG && len(x.g.data) > fsxMaxLen {
		x.must("truncate g", unix.Ftruncate(x.gfd, fsxMaxLen/2))
		x.g.resize(fsxMaxLen / 2)
	}
}

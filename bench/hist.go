package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"time"
)

// subBits sets the precision of a Histogram: each power of two is split
// into 2^subBits buckets, so a quantile is off by less than 1/2^subBits
// (1.6%) of its value. Values below 2^subBits ns are kept exactly.
const (
	subBits    = 6
	subBuckets = 1 << subBits
	numBuckets = (64 - subBits + 1) * subBuckets
)

// Histogram counts latencies (in nanoseconds) in log-linear buckets, like
// HdrHistogram. Histograms of several processes merge exactly: a quantile of
// the merged histogram is the quantile of all their samples.
type Histogram struct {
	counts   [numBuckets]uint64
	n        uint64
	sum      float64 // ns
	min, max int64   // ns
}

// bucketOf returns the bucket of v.
func bucketOf(v int64) int {
	if v < subBuckets {
		return int(max(v, 0))
	}
	shift := bits.Len64(uint64(v)) - subBits - 1 // v>>shift is in [64, 128)
	return (shift+1)*subBuckets + int(uint64(v)>>shift) - subBuckets
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < subBuckets {
		return int64(i), int64(i)
	}
	shift := i/subBuckets - 1
	lo = int64(i%subBuckets+subBuckets) << shift
	return lo, lo + (int64(1) << shift) - 1
}

// Record adds one sample.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Merge adds every sample of o.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of samples.
func (h *Histogram) Count() uint64 { return h.n }

// Mean is the mean of the samples (0 without any).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Max is the largest sample.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Quantile returns the value below or at which a fraction q of the samples
// lie (the sample of rank ceil(q*n), as "nearest rank" defines it), to the
// precision of a bucket: the middle of its bucket, kept within the smallest
// and largest sample seen (which are exact).
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	switch rank {
	case 1:
		return time.Duration(h.min)
	case h.n:
		return time.Duration(h.max)
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketRange(i)
			v := lo + (hi-lo)/2
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

// histJSON is a Histogram on the wire between worker and parent: only the
// buckets in use, as [bucket, count] pairs.
type histJSON struct {
	Buckets [][2]uint64 `json:"buckets"`
	N       uint64      `json:"n"`
	Sum     float64     `json:"sum"`
	Min     int64       `json:"min"`
	Max     int64       `json:"max"`
}

func (h *Histogram) MarshalJSON() ([]byte, error) {
	j := histJSON{N: h.n, Sum: h.sum, Min: h.min, Max: h.max, Buckets: [][2]uint64{}}
	for i, c := range h.counts {
		if c != 0 {
			j.Buckets = append(j.Buckets, [2]uint64{uint64(i), c})
		}
	}
	return json.Marshal(j)
}

func (h *Histogram) UnmarshalJSON(b []byte) error {
	var j histJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*h = Histogram{n: j.N, sum: j.Sum, min: j.Min, max: j.Max}
	var total uint64
	for _, bc := range j.Buckets {
		if bc[0] >= numBuckets {
			return fmt.Errorf("histogram bucket %d out of range", bc[0])
		}
		h.counts[bc[0]] += bc[1]
		total += bc[1]
	}
	if total != h.n {
		return fmt.Errorf("histogram holds %d samples in its buckets, says %d", total, h.n)
	}
	return nil
}

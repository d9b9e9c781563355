package jfspb

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// TestEveryResponseHasErrno checks api/jfs.proto's rule for every message
// whose name ends in Response: field 1 is a plain int32 named errno, and
// the Go type implements Errno so that setting it through the interface
// writes that field.
func TestEveryResponseHasErrno(t *testing.T) {
	n := 0
	for _, file := range []protoreflect.FileDescriptor{File_jfs_proto, File_raftlog_proto} {
		msgs := file.Messages()
		for i := 0; i < msgs.Len(); i++ {
			md := msgs.Get(i)
			if !strings.HasSuffix(string(md.Name()), "Response") {
				continue
			}
			n++
			t.Run(string(md.Name()), func(t *testing.T) {
				fd := md.Fields().ByNumber(1)
				if fd == nil || fd.Name() != "errno" || fd.Kind() != protoreflect.Int32Kind ||
					fd.Cardinality() == protoreflect.Repeated || fd.ContainingOneof() != nil {
					t.Fatalf("field 1 is %v, want a plain int32 errno", fd)
				}
				mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
				if err != nil {
					t.Fatal(err)
				}
				m := mt.New().Interface()
				e, ok := m.(Errno)
				if !ok {
					t.Fatalf("%T does not implement Errno: add its SetErrno to errno.go", m)
				}
				e.SetErrno(11)
				if got := e.GetErrno(); got != 11 {
					t.Fatalf("GetErrno after SetErrno(11) = %d", got)
				}
				if got := m.ProtoReflect().Get(fd).Int(); got != 11 {
					t.Fatalf("field 1 after SetErrno(11) = %d", got)
				}
			})
		}
	}
	if n < 40 {
		t.Fatalf("found %d response messages; the descriptor walk is broken", n)
	}
}

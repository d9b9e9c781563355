package jfspb

// Errno is implemented by every response message: api/jfs.proto's rule is
// that each response starts with `int32 errno = 1`, 0 for success and a
// Linux errno otherwise. The state machine sets and reads the errno of any
// response through this interface, so a response type without the field
// does not compile where one is needed; errno_test.go checks that every
// message named *Response implements it, with the field numbered 1.
type Errno interface {
	GetErrno() int32
	SetErrno(int32)
}

// The setters are written out, one per response message, because
// protoc-gen-go generates getters only. A new response message needs one.

func (x *RegisterResponse) SetErrno(e int32) { x.Errno = e }

func (x *HeartbeatResponse) SetErrno(e int32) { x.Errno = e }

func (x *CloseSessionResponse) SetErrno(e int32) { x.Errno = e }

func (x *ExpireSessionResponse) SetErrno(e int32) { x.Errno = e }

func (x *LookupResponse) SetErrno(e int32) { x.Errno = e }

func (x *GetAttrResponse) SetErrno(e int32) { x.Errno = e }

func (x *SetAttrResponse) SetErrno(e int32) { x.Errno = e }

func (x *MknodResponse) SetErrno(e int32) { x.Errno = e }

func (x *MkdirResponse) SetErrno(e int32) { x.Errno = e }

func (x *CreateResponse) SetErrno(e int32) { x.Errno = e }

func (x *UnlinkResponse) SetErrno(e int32) { x.Errno = e }

func (x *RmdirResponse) SetErrno(e int32) { x.Errno = e }

func (x *RenameResponse) SetErrno(e int32) { x.Errno = e }

func (x *LinkResponse) SetErrno(e int32) { x.Errno = e }

func (x *SymlinkResponse) SetErrno(e int32) { x.Errno = e }

func (x *ReadLinkResponse) SetErrno(e int32) { x.Errno = e }

func (x *ReadDirResponse) SetErrno(e int32) { x.Errno = e }

func (x *OpenResponse) SetErrno(e int32) { x.Errno = e }

func (x *ReleaseResponse) SetErrno(e int32) { x.Errno = e }

func (x *ReadResponse) SetErrno(e int32) { x.Errno = e }

func (x *WriteResponse) SetErrno(e int32) { x.Errno = e }

func (x *StatFSResponse) SetErrno(e int32) { x.Errno = e }

func (x *GetXattrResponse) SetErrno(e int32) { x.Errno = e }

func (x *SetXattrResponse) SetErrno(e int32) { x.Errno = e }

func (x *ListXattrResponse) SetErrno(e int32) { x.Errno = e }

func (x *RemoveXattrResponse) SetErrno(e int32) { x.Errno = e }

func (x *GetLkResponse) SetErrno(e int32) { x.Errno = e }

func (x *SetLkResponse) SetErrno(e int32) { x.Errno = e }

func (x *FlockResponse) SetErrno(e int32) { x.Errno = e }

func (x *CancelLockWaitResponse) SetErrno(e int32) { x.Errno = e }

func (x *ReleaseLockOwnerResponse) SetErrno(e int32) { x.Errno = e }

func (x *SetMemberResponse) SetErrno(e int32) { x.Errno = e }

func (x *ClusterStatusResponse) SetErrno(e int32) { x.Errno = e }

func (x *AddMemberResponse) SetErrno(e int32) { x.Errno = e }

func (x *RemoveMemberResponse) SetErrno(e int32) { x.Errno = e }

func (x *TransferLeaderResponse) SetErrno(e int32) { x.Errno = e }

func (x *ListSessionsResponse) SetErrno(e int32) { x.Errno = e }

func (x *ListLocksResponse) SetErrno(e int32) { x.Errno = e }

func (x *EvictSessionResponse) SetErrno(e int32) { x.Errno = e }

func (x *DigestResponse) SetErrno(e int32) { x.Errno = e }

func (x *ConfirmTermResponse) SetErrno(e int32) { x.Errno = e }

func (x *FallocateResponse) SetErrno(e int32) { x.Errno = e }

func (x *SetSettingsResponse) SetErrno(e int32) { x.Errno = e }

func (x *FreeDataResponse) SetErrno(e int32) { x.Errno = e }

func (x *TouchAtimeResponse) SetErrno(e int32) { x.Errno = e }

func (x *ReleaseBatchResponse) SetErrno(e int32) { x.Errno = e }

func (x *SessionsAliveResponse) SetErrno(e int32) { x.Errno = e }

func (x *CheckpointResponse) SetErrno(e int32) { x.Errno = e }

func (x *MarkCorruptResponse) SetErrno(e int32) { x.Errno = e }

func (x *RestoredResponse) SetErrno(e int32) { x.Errno = e }

func (x *EndLockWaitResponse) SetErrno(e int32) { x.Errno = e }

func (x *SnapshotRestoreResponse) SetErrno(e int32) { x.Errno = e }

func (x *ReportOpensResponse) SetErrno(e int32) { x.Errno = e }
func (x *CacheAckResponse) SetErrno(e int32)    { x.Errno = e }

func (x *FreeOrphansResponse) SetErrno(e int32) { x.Errno = e }

func (x *DelegReturnResponse) SetErrno(e int32) { x.Errno = e }

func (x *DelegReportResponse) SetErrno(e int32) { x.Errno = e }

package embedded

import (
	"context"
	"errors"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// DefaultSpaceCheckInterval is how often the embedded etcd's NOSPACE alarm
// is looked at.
const DefaultSpaceCheckInterval = 10 * time.Second

// spaceHeadroom is the share of the quota that must be free after a
// defragmentation for writes to be accepted again: without it, the first
// write would raise the alarm again at once.
const spaceHeadroom = 0.1

// recoverSpace ends etcd's NOSPACE alarm once objects have been deleted:
// etcd refuses every write but deletes from the moment its database
// reaches its quota, and keeps refusing them, whatever is deleted, until
// the alarm is disarmed. An operator of etcd compacts, defragments and
// disarms by hand; with the store inside annex, annex does it, each check
// while the alarm is raised and the store changed since the last try:
// it compacts to the current revision (watches resumed from before it get
// 410 and list again, as after any compaction), defragments (reads and
// writes wait meanwhile: the store refuses writes anyway), and disarms the
// alarm when the database then leaves spaceHeadroom of the quota free.
func (e *Etcd) recoverSpace(ctx context.Context, quota int64, every time.Duration) {
	logger := klog.FromContext(ctx)
	t := time.NewTicker(every)
	defer t.Stop()
	var lastTried int64
	raised := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !hasNoSpaceAlarm(e.etcd.Server) {
			raised = false
			continue
		}
		s := e.etcd.Server
		rev := s.KV().Rev()
		if !raised {
			raised = true
			logger.Info("The embedded etcd is out of space (its NOSPACE alarm): writes are refused until objects are deleted",
				"quotaBytes", quota, "dbSizeBytes", s.Backend().Size(), "dbSizeInUseBytes", s.Backend().SizeInUse())
		}
		if rev == lastTried {
			continue // nothing deleted since the last try
		}
		lastTried = rev
		freed, err := e.reclaim(ctx, rev)
		if err != nil {
			logger.Error(err, "Reclaiming the embedded etcd's space failed; trying again at the next change")
			continue
		}
		size := s.Backend().Size()
		if float64(size) > float64(quota)*(1-spaceHeadroom) {
			logger.Info("The embedded etcd is still out of space after a compaction and a defragmentation: delete objects to free space",
				"quotaBytes", quota, "dbSizeBytes", size, "freedBytes", freed)
			continue
		}
		_, err = s.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, MemberID: uint64(s.MemberID()), Alarm: pb.AlarmType_NOSPACE})
		if err != nil {
			logger.Error(err, "Disarming the embedded etcd's NOSPACE alarm failed; trying again at the next change")
			lastTried = 0
			continue
		}
		raised = false
		logger.Info("The embedded etcd has space again: writes are accepted", "quotaBytes", quota, "dbSizeBytes", size, "freedBytes", freed)
	}
}

// reclaim compacts the store to rev and defragments it; it returns how many
// bytes of the database file went.
func (e *Etcd) reclaim(ctx context.Context, rev int64) (int64, error) {
	s := e.etcd.Server
	before := s.Backend().Size()
	_, err := s.Compact(ctx, &pb.CompactionRequest{Revision: rev, Physical: true})
	if err != nil && !errors.Is(err, mvcc.ErrCompacted) {
		return 0, err
	}
	if err := s.Defragment(); err != nil {
		return 0, err
	}
	return before - s.Backend().Size(), nil
}

func hasNoSpaceAlarm(s *etcdserver.EtcdServer) bool {
	for _, a := range s.Alarms() {
		if a.Alarm == pb.AlarmType_NOSPACE {
			return true
		}
	}
	return false
}

// walReserve is what etcd's write-ahead log takes of the volume beside the
// database: it preallocates its segments of 64 MiB, always one ahead.
const walReserve = 128 << 20

// spaceShortfall says by how much the volume under dir lacks the room the
// database may take: its quota, less what the database file already holds
// (it is on the volume), plus walReserve. Zero when the volume has room.
func spaceShortfall(free, dbSize, quota int64) int64 {
	return max(quota-dbSize+walReserve-free, 0)
}

// checkSpace warns when the volume under dir cannot hold the database up to
// its quota: the disk would fill first, and etcd stops on a write it cannot
// commit (annex exits, and starts again on its data once there is space),
// where at the quota it refuses writes with a clear error and goes on.
func checkSpace(logger klog.Logger, dir string, dbSize, quota int64) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		logger.Info("Cannot read the free space of the embedded etcd's volume", "dir", dir, "err", err.Error())
		return
	}
	free := int64(st.Bavail) * st.Bsize
	short := spaceShortfall(free, dbSize, quota)
	if short == 0 {
		return
	}
	logger.Info("Warning: the embedded etcd's volume is smaller than its quota: the disk may fill before the quota does, and annex would stop; "+
		"give the volume more space, or lower --embedded-etcd-quota-backend-bytes",
		"dir", dir, "freeBytes", free, "dbSizeBytes", dbSize, "quotaBytes", quota, "walReserveBytes", walReserve,
		"shortBytes", short, "quotaThatFitsBytes", max(quota-short, 0))
}

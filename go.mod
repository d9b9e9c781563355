module github.com/jfs-dev/jfs

go 1.26

#!/bin/sh
# PID 1 of the arm64 test VM (installed as /sbin/fedlab-test-init by build_image.sh).
# Mounts the host's 9p share "fedlab" on /mnt/fedlab, runs its guest_test.sh with the output
# on the console and in /mnt/fedlab/guest.log, then powers off. Kept minimal: what the test
# does lives in the share, so changing it does not rebuild the image.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -o remount,rw /
hostname fedlab-arm64
for m in 9pnet_virtio 9p; do modprobe "$m"; done
mkdir -p /mnt/fedlab
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 fedlab /mnt/fedlab; then
  echo "FEDLAB-GUEST: share mounted"
  bash /mnt/fedlab/guest_test.sh 2>&1 | tee /mnt/fedlab/guest.log
  echo "FEDLAB-GUEST: test script finished"
else
  echo "FEDLAB-GUEST: cannot mount the 9p share 'fedlab'"
fi
sync
umount /mnt/fedlab 2>/dev/null
mount -o remount,ro / 2>/dev/null
echo o > /proc/sysrq-trigger
sleep 30

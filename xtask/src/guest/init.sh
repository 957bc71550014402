#!/bin/busybox sh
# The Linux guest of `cargo xtask guest`: attaches a csd device over NVMe/TCP with Linux's own
# nvme-tcp driver, then looks at it and writes to it with the usual tools. Lines that start
# with "GUEST:" are what the host checks.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# The modules in dependency order (the virtio network, then the NVMe/TCP host), as
# xtask/src/guest.rs lists them.
for m in $(cat /modules/order); do
  insmod "/modules/$m.ko" || echo "GUEST: insmod $m failed"
done
# csd.port=... and csd.nqn=... from the kernel command line.
for a in $(cat /proc/cmdline); do
  case $a in csd.port=*) port=${a#*=};; csd.nqn=*) nqn=${a#*=};; esac
done
# QEMU's user-mode network: the gateway 10.0.2.2 is the host's loopback.
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "GUEST: up $(cut -d' ' -f1 /proc/uptime)"
hostid=0c5d0000-0000-4000-8000-000000000001
nvme discover -t tcp -a 10.0.2.2 -s "$port" \
  --hostnqn="nqn.2014-08.org.nvmexpress:uuid:$hostid" --hostid="$hostid" > /tmp/discover.txt
echo "GUEST: discover $? $(grep subnqn /tmp/discover.txt | tr -s ' ')"
nvme connect -t tcp -a 10.0.2.2 -s "$port" -n "$nqn" \
  --hostnqn="nqn.2014-08.org.nvmexpress:uuid:$hostid" --hostid="$hostid"
echo "GUEST: connect $?"
# The zoned namespace is the controller's one block device (the program namespaces have
# generic char devices only); Linux numbers devices in the order it finds namespaces.
blockdev() {
  for d in /dev/nvme*n*; do [ -b "$d" ] && echo "$d" && return; done
}
for i in 1 2 3 4 5 6 7 8 9 10; do [ -n "$(blockdev)" ] && break; sleep 1; done
dev=$(blockdev)
nvme list
echo "GUEST: zoned $(cat /sys/block/${dev#/dev/}/queue/zoned)"
blkzone report -c 4 "$dev"
fio --name=zbd --filename="$dev" --direct=1 --zonemode=zbd --rw=write --bs=64k \
  --offset=0 --size=4M --verify=crc32c --ioengine=psync
echo "GUEST: fio $?"
# The same data read back and verified again, 16 reads in flight (libaio): the target takes
# commands while others are outstanding.
# (Not in zbd mode: fio would reset the zones before a write job, even one that only verifies.)
fio --name=zbd --filename="$dev" --direct=1 --rw=write --bs=64k \
  --offset=0 --size=4M --verify=crc32c --verify_only=1 --ioengine=libaio --iodepth=16
echo "GUEST: fio-qd16 $?"
echo "GUEST: zones after fio"
nvme zns report-zones "$dev" -d 8
# A kernel through csd's own commands (vendor-specific opcodes; see docs/ARCHITECTURE.md): Load
# Program (admin C1h) of the entropy kernel as index 1, then Execute Program (I/O C2h) over
# the 1,024 LBAs fio wrote; the output is the byte histogram.
nvme admin-passthru /dev/nvme0 --opcode=0xc1 --cdw10=1 --write \
  --data-len="$(stat -c %s /kernels/entropy.o)" --input-file=/kernels/entropy.o > /dev/null
echo "GUEST: load $?"
nvme io-passthru "$dev" --opcode=0xc2 --namespace-id=1 --cdw10=1 --cdw12=0 --cdw13=0 \
  --cdw14=1023 --data-len=2048 --read --raw-binary > /tmp/histogram.bin
echo "GUEST: execute $?"
echo "GUEST: histogram $(od -An -tx1 -v /tmp/histogram.bin | tr -d ' \n')"
# The same run through the Computational Programs commands (docs/ARCHITECTURE.md, "Commands
# on the wire"): Load Program (85h) as program 2 (type C0h), Program Activation Management
# (88h), Memory Range Set Management (89h) creating range set 1 of one extent (LBA 0, 1,024
# blocks: 12 bytes) with 4 MiB of file and 2 KiB of output, Execute Program (01h) on the
# compute namespace (2) with its parameter data (offset 0, length 4 MiB, a file job), and
# Memory Read (02h) of range set 1's output (from byte 1 << 32) on the memory namespace (3),
# each namespace through its generic char device.
gendev() {
  for d in /dev/ng0n*; do
    nvme get-ns-id "$d" 2>/dev/null | grep -q "namespace-id:$1\$" && echo "$d" && return
  done
}
size=$(stat -c %s /kernels/entropy.o)
nvme admin-passthru /dev/nvme0 --opcode=0x85 --cdw10=$((0xc00002)) --cdw11="$size" \
  --cdw14="$size" --cdw15=0 --write --data-len="$size" --input-file=/kernels/entropy.o > /dev/null
echo "GUEST: cp-load $?"
nvme admin-passthru /dev/nvme0 --opcode=0x88 --cdw10=$((0x10002)) > /dev/null
echo "GUEST: cp-activate $?"
printf '\0\0\0\0\0\0\0\0\0\4\0\0' > /tmp/extent
nvme admin-passthru /dev/nvme0 --opcode=0x89 --cdw10=$((1 << 16)) --cdw11=1 \
  --cdw12=$((4 << 20)) --cdw14=2048 --write --data-len=12 --input-file=/tmp/extent > /dev/null
echo "GUEST: cp-range-set $?"
printf '\0\0\0\0\0\0\0\0\0\0\100\0\0\0\0\0\1\0\0\0\0\0\0\0' > /tmp/parameters
compute=$(gendev 2)
memory=$(gendev 3)
echo "GUEST: cp-namespaces ${compute:-none} ${memory:-none}"
nvme io-passthru "$compute" --opcode=0x01 --namespace-id=2 --cdw2=$((2 | 1 << 16)) --write \
  --data-len=24 --input-file=/tmp/parameters > /tmp/cp-execute.txt 2>&1
echo "GUEST: cp-execute $? $(tr -s ' \n' ' ' < /tmp/cp-execute.txt)"
nvme io-passthru "$memory" --opcode=0x02 --namespace-id=3 --cdw10=0 --cdw11=1 --cdw12=2048 \
  --data-len=2048 --read --raw-binary > /tmp/cp-histogram.bin
echo "GUEST: cp-read $?"
echo "GUEST: cp-histogram $(od -An -tx1 -v /tmp/cp-histogram.bin | tr -d ' \n')"
# Again with header and data digests (CRC-32C over every PDU header and all data): fio
# writes and verifies 4 MiB in zones 32 on, 8 writes in flight.
nvme disconnect-all
nvme connect -t tcp -a 10.0.2.2 -s "$port" -n "$nqn" --hdr-digest --data-digest \
  --hostnqn="nqn.2014-08.org.nvmexpress:uuid:$hostid" --hostid="$hostid"
echo "GUEST: connect-digests $?"
for i in 1 2 3 4 5 6 7 8 9 10; do
  dev=$(blockdev)
  [ -n "$dev" ] && break
  sleep 1
done
fio --name=digests --filename="$dev" --direct=1 --zonemode=zbd --rw=write --bs=64k \
  --offset=32M --size=4M --verify=crc32c --ioengine=libaio --iodepth=8
echo "GUEST: fio-digests $?"
nvme disconnect-all
echo "GUEST: done"
poweroff -f

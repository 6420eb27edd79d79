# SPDX-License-Identifier: GPL-2.0
#
# The busybox workload of the kmtrace recording guest (run by record-init
# with the kmem trace events on).  Each part prints one "part NAME: ok" or
# "part NAME: FAILED" line; the script exits non-zero if a part failed.
# Each part runs in a subshell with set -e: any failing command fails it.
# Sizes are kept small so that the committed trace stays a few MB (xz).
# shellcheck shell=sh
bad=0
part() { # NAME COMMAND...: run a part of the workload; any failing command fails it
	name=$1; shift
	( set -e; "$@" ) >/tmp/part.log 2>&1
	if [ $? = 0 ]; then echo "KMTRACE: part $name: ok"; else
		echo "KMTRACE-FAIL: part $name: FAILED"; cat /tmp/part.log; bad=1; fi
}

W=/tmp/w
files() { # create, copy, list, rename, delete small files on tmpfs
	mkdir -p $W/src $W/etc
	i=0
	while [ $i -lt 400 ]; do
		echo "file $i: $(date) $i$i$i" >$W/src/f$i
		i=$((i + 1))
	done
	cp /bin/busybox $W/busybox
	cp -a /etc/. $W/etc/
	ls -lR $W >$W/listing
	ls -lR /sys/devices /proc/sys >/dev/null 2>&1
	find $W -type f | xargs md5sum >$W/md5s
	for f in $W/src/f1*; do mv "$f" "$f.old"; done
	rm -f $W/src/*.old
	[ "$(ls $W/src | wc -l)" -gt 50 ]
}

archives() { # tar and gzip round trips
	cd /tmp || return 1
	tar -cf w.tar w
	mkdir -p x && tar -xf w.tar -C x
	diff -r w x/w
	tar -czf w.tgz w
	[ "$(tar -tzf w.tgz | wc -l)" -gt 100 ]
	rm -rf x
}

pipes() { # pipelines and a FIFO
	cd /tmp || return 1
	a=$(gzip -c <w/busybox | gunzip -c | md5sum | cut -d' ' -f1)
	b=$(md5sum <w/busybox | cut -d' ' -f1)
	[ "$a" = "$b" ]
	[ "$(seq 1 5000 | sort -r | uniq | wc -l)" = 5000 ]
	mkfifo fifo
	cat w.tar >fifo &
	c=$(md5sum <fifo | cut -d' ' -f1)
	wait
	[ "$c" = "$(md5sum <w.tar | cut -d' ' -f1)" ]
	rm -f fifo
}

processes() { # fork, exec, exit, wait
	i=0
	while [ $i -lt 200 ]; do
		/bin/true
		sh -c 'echo $$ >/dev/null'
		i=$((i + 1))
	done
	( sleep 0; echo sub ) | cat >/dev/null
}

ext2() { # a loop-mounted ext2 filesystem
	cd /tmp || return 1
	dd if=/dev/zero of=ext2.img bs=1M count=8 2>/dev/null
	mke2fs -q -F ext2.img
	mkdir -p /mnt
	mount -o loop ext2.img /mnt
	cp -a w/src w/etc /mnt/
	tar -xf w.tar -C /mnt
	sync
	diff -r w/src /mnt/src
	umount /mnt && mount -o loop ext2.img /mnt
	diff -r w/etc /mnt/etc
	ls -lR /mnt >/dev/null
	rm -rf /mnt/w /mnt/src /mnt/etc
	umount /mnt
	losetup -D 2>/dev/null || true
	rm -f ext2.img
}

unix_sockets() { # syslogd on the /dev/log unix socket, logger as its client
	syslogd -n -O /tmp/messages &
	pid=$!
	n=0
	while [ ! -S /dev/log ] && [ $n -lt 500 ]; do usleep 10000; n=$((n + 1)); done
	[ -S /dev/log ] || return 1
	i=0
	while [ $i -lt 200 ]; do logger -t kmtrace "message $i"; i=$((i + 1)); done
	kill $pid
	wait $pid || true
	grep -q 'message 199' /tmp/messages
}

tcp() { # loopback TCP: busybox httpd + wget, and nc
	ip link set lo up
	httpd -p 127.0.0.1:8080 -h /tmp/w
	sum=$(md5sum </tmp/w/busybox | cut -d' ' -f1)
	i=0
	while [ $i -lt 20 ]; do
		n=0
		until got=$(wget -q -O - http://127.0.0.1:8080/busybox | md5sum | cut -d' ' -f1) &&
			[ "$got" = "$sum" ]; do
			n=$((n + 1)); [ $n -lt 50 ] || return 1; usleep 20000
		done
		i=$((i + 1))
	done
	killall httpd
	# nc: a download (the server runs cat) and an upload (the server runs md5sum)
	nc -l -p 5001 -e cat /tmp/w.tar &
	pid=$!
	n=0
	until nc 127.0.0.1 5001 </dev/null >/tmp/recv && [ -s /tmp/recv ]; do
		n=$((n + 1)); [ $n -lt 100 ] || return 1; usleep 20000
	done
	wait $pid
	cmp /tmp/recv /tmp/w.tar
	nc -l -p 5002 -e sh -c 'md5sum >/tmp/up.md5' &
	pid=$!
	n=0
	until nc 127.0.0.1 5002 </tmp/w.tar; do
		n=$((n + 1)); [ $n -lt 100 ] || return 1; usleep 20000
	done
	wait $pid
	[ "$(cut -d' ' -f1 /tmp/up.md5)" = "$(md5sum </tmp/w.tar | cut -d' ' -f1)" ]
}

part files files
part archives archives
part pipes pipes
part processes processes
part ext2 ext2
part unix_sockets unix_sockets
part tcp tcp
rm -rf /tmp/w /tmp/w.tar /tmp/w.tgz /tmp/recv /tmp/up.md5 /tmp/messages
exit $bad

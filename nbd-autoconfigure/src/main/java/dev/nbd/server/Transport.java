package dev.nbd.server;

/** Netty transport for the listener. */
public enum Transport {

	/** epoll when its native library loads, else NIO. */
	AUTO,

	/** Java NIO, available everywhere. */
	NIO,

	/** Linux epoll (native). */
	EPOLL,

	/** Linux io_uring (native; often blocked by container seccomp profiles). */
	IO_URING

}

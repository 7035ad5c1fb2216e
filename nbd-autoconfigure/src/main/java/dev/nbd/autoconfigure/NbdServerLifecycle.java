package dev.nbd.autoconfigure;

import java.time.Duration;

import org.springframework.context.ApplicationEventPublisher;
import org.springframework.context.SmartLifecycle;

import dev.nbd.server.NbdServer;

/**
 * Starts the listener with the context and stops it gracefully: no new connections, new
 * requests answered {@code NBD_ESHUTDOWN}, requests in flight finished, every export flushed,
 * all within the shutdown phase timeout.
 */
public class NbdServerLifecycle implements SmartLifecycle {

	/** Stops before the web server's graceful shutdown, so actuator still answers while NBD drains. */
	public static final int PHASE = SmartLifecycle.DEFAULT_PHASE - 512;

	private final NbdServer server;

	private final ApplicationEventPublisher publisher;

	private final Duration shutdownTimeout;

	private volatile boolean running;

	public NbdServerLifecycle(NbdServer server, ApplicationEventPublisher publisher, Duration shutdownTimeout) {
		this.server = server;
		this.publisher = publisher;
		this.shutdownTimeout = shutdownTimeout;
	}

	@Override
	public void start() {
		this.server.start();
		this.running = true;
		this.publisher.publishEvent(new NbdServerInitializedEvent(this.server));
	}

	@Override
	public void stop() {
		this.server.shutdownGracefully(this.shutdownTimeout);
		this.running = false;
	}

	@Override
	public void stop(Runnable callback) {
		Thread thread = new Thread(() -> {
			try {
				stop();
			}
			finally {
				callback.run();
			}
		}, "nbd-shutdown");
		thread.start();
	}

	@Override
	public boolean isRunning() {
		return this.running;
	}

	@Override
	public int getPhase() {
		return PHASE;
	}

	@Override
	public boolean isPauseable() {
		return false;
	}

}

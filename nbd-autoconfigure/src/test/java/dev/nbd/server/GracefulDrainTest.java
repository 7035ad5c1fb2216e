package dev.nbd.server;

import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import dev.nbd.backend.ExportBackend;
import dev.nbd.protocol.NbdError;
import dev.nbd.testsupport.PipelinedNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Graceful stop at the server level: requests arriving once the drain began get
 * {@code NBD_ESHUTDOWN}, and a write still running when the drain times out is never answered
 * with success after the final flush started (that flush may not cover it).
 */
class GracefulDrainTest {

	private final CountDownLatch writeStarted = new CountDownLatch(1);

	private final CountDownLatch releaseWrite = new CountDownLatch(1);

	private final CountDownLatch writeReturned = new CountDownLatch(1);

	private NbdServer server;

	@AfterEach
	void stop() {
		if (this.server != null) {
			this.server.stop();
		}
	}

	@Test
	void lateWriteIsNotAnsweredAfterTheFinalFlushAndNewRequestsGetEshutdown() throws Exception {
		this.server = new NbdServer(NbdServerConfig.builder().port(0).build(), List.of(new StuckWriteBackend()),
				Map.of(), Map.of(), null);
		this.server.start();
		try (PipelinedNbdClient client = PipelinedNbdClient.connect(this.server.port(), "stuck")) {
			PipelinedNbdClient.Pending stuck = client.write(0, new byte[4096], false);
			assertThat(this.writeStarted.await(10, TimeUnit.SECONDS)).isTrue();
			Thread stopper = new Thread(() -> this.server.shutdownGracefully(Duration.ofMillis(300)));
			stopper.start();
			while (!this.server.isDraining()) {
				Thread.sleep(1);
			}
			PipelinedNbdClient.Reply refused = client.write(8192, new byte[4096], false).reply().get(10, TimeUnit.SECONDS);
			assertThat(refused.error()).isEqualTo(NbdError.ESHUTDOWN.code());
			stopper.join(10_000);
			assertThat(stopper.isAlive()).isFalse();
			assertThat(this.writeReturned.getCount()).isZero();
			// The stuck write returned while the final flush ran: no success reply may follow.
			PipelinedNbdClient.Reply late = null;
			try {
				late = stuck.reply().get(10, TimeUnit.SECONDS);
			}
			catch (java.util.concurrent.ExecutionException ex) {
				// Connection closed without an answer: what the contract asks for.
			}
			assertThat(late == null || late.error() != 0).as("late write answered with success").isTrue();
		}
	}

	/** Its first write blocks until the shutdown flush runs; the flush waits for that write to return. */
	private final class StuckWriteBackend implements ExportBackend {

		@Override
		public String name() {
			return "stuck";
		}

		@Override
		public long size() {
			return 1 << 20;
		}

		@Override
		public boolean isMultiConnSafe() {
			return true;
		}

		@Override
		public boolean canFlush() {
			return true;
		}

		@Override
		public void read(long offset, ByteBuffer dst) {
			dst.position(dst.limit());
		}

		@Override
		public void write(long offset, ByteBuffer src, boolean fua) throws java.io.IOException {
			if (offset == 0) {
				GracefulDrainTest.this.writeStarted.countDown();
				try {
					GracefulDrainTest.this.releaseWrite.await(10, TimeUnit.SECONDS);
				}
				catch (InterruptedException ex) {
					Thread.currentThread().interrupt();
				}
				GracefulDrainTest.this.writeReturned.countDown();
			}
		}

		@Override
		public void flush() {
			// Let the stuck write finish now and give its reply every chance to go out.
			GracefulDrainTest.this.releaseWrite.countDown();
			try {
				GracefulDrainTest.this.writeReturned.await(10, TimeUnit.SECONDS);
				Thread.sleep(300);
			}
			catch (InterruptedException ex) {
				Thread.currentThread().interrupt();
			}
		}

	}

}

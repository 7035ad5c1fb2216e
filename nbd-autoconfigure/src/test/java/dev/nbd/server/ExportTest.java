package dev.nbd.server;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.NbdBackendException;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import io.netty.channel.embedded.EmbeddedChannel;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatExceptionOfType;
import static org.assertj.core.api.Assertions.assertThatIOException;

/**
 * An export's flush bookkeeping without a server: the shutdown flush, the sync latch, flush
 * counts that outlive their connections, where FUA is done, and on which thread syncs run.
 */
class ExportTest {

	private static final Executor INLINE = Runnable::run;

	@Test
	void theShutdownFlushSyncsAWritableExportOnce() throws Exception {
		Backend backend = new Backend();
		new Export(backend, MultiConnMode.AUTO, List.of(), INLINE).flushAll();
		assertThat(backend.flushes).hasValue(1);
	}

	@Test
	void theShutdownFlushLeavesReadOnlyAndUnflushableExportsAlone() throws Exception {
		Backend readOnly = new Backend();
		readOnly.readOnly = true;
		new Export(readOnly, MultiConnMode.AUTO, List.of(), INLINE).flushAll();
		Backend unflushable = new Backend();
		unflushable.canFlush = false;
		new Export(unflushable, MultiConnMode.AUTO, List.of(), INLINE).flushAll();
		assertThat(readOnly.flushes).hasValue(0);
		assertThat(unflushable.flushes).hasValue(0);
	}

	@Test
	void theShutdownFlushOfAnUnsafeBackendFlushesEveryOpenView() throws Exception {
		Backend backend = new Backend();
		backend.multiConnSafe = false;
		Export export = new Export(backend, MultiConnMode.AUTO, List.of(), INLINE);
		Backend first = new Backend();
		Backend second = new Backend();
		export.connections().add(attached(export, first));
		export.connections().add(attached(export, second));
		// Still negotiating: no view to flush yet.
		export.connections().add(new NbdConnection(new EmbeddedChannel(), 1));
		export.flushAll();
		assertThat(first.flushes).hasValue(1);
		assertThat(second.flushes).hasValue(1);
		assertThat(backend.flushes).hasValue(0);
	}

	@Test
	void afterAFailedSyncNoLaterSyncReachesTheBackend() throws Exception {
		Backend backend = new Backend();
		backend.failFlush = true;
		Export export = new Export(backend, MultiConnMode.AUTO, List.of(), INLINE);
		assertThat(export.syncFailed()).isFalse();
		assertThatIOException().isThrownBy(export::flushAll);
		assertThat(export.syncFailed()).isTrue();
		assertThat(export.syncFailures()).isEqualTo(1);
		backend.failFlush = false;
		assertThatExceptionOfType(NbdBackendException.class).isThrownBy(export::flushAll)
			.satisfies((ex) -> assertThat(ex.error()).isEqualTo(NbdError.EIO));
		assertThatExceptionOfType(ExecutionException.class)
			.isThrownBy(() -> export.sharedFlush().flush().get(10, TimeUnit.SECONDS))
			.withCauseInstanceOf(NbdBackendException.class);
		assertThat(backend.flushes).as("syncs that reached the backend").hasValue(1);
	}

	@Test
	void closedConnectionsKeepTheirFlushCountsInTheExportTotals() throws Exception {
		Backend backend = new Backend();
		backend.multiConnSafe = false;
		Export export = new Export(backend, MultiConnMode.AUTO, List.of(), INLINE);
		assertThat(export.sharedFlush()).as("each connection flushes its own view").isNull();
		NbdConnection closing = attached(export, new Backend());
		NbdConnection staying = attached(export, new Backend());
		export.connections().add(closing);
		export.connections().add(staying);
		closing.ownFlush().flush().get(10, TimeUnit.SECONDS);
		closing.ownFlush().flush().get(10, TimeUnit.SECONDS);
		staying.ownFlush().flush().get(10, TimeUnit.SECONDS);
		assertThat(export.flushRequests()).isEqualTo(3);
		assertThat(export.backendSyncs()).isEqualTo(3);
		export.connectionClosed(closing);
		// A second report of the same close must not count it twice.
		export.connectionClosed(closing);
		assertThat(export.connections()).containsExactly(staying);
		assertThat(export.flushRequests()).isEqualTo(3);
		assertThat(export.backendSyncs()).isEqualTo(3);
	}

	@Test
	void fuaIsNativeOnlyWhereTheBackendCanAndEveryConnectionSeesItsWrites() {
		Backend safe = new Backend();
		safe.canFua = true;
		Backend unsafe = new Backend();
		unsafe.canFua = true;
		unsafe.multiConnSafe = false;
		assertThat(new Export(safe, MultiConnMode.EMULATE, List.of(), INLINE).nativeFua()).isTrue();
		assertThat(new Export(unsafe, MultiConnMode.AUTO, List.of(), INLINE).nativeFua()).isTrue();
		// Emulated multi-conn: FUA on one view would not reach the others, so write, then flush them all.
		assertThat(new Export(unsafe, MultiConnMode.EMULATE, List.of(), INLINE).nativeFua()).isFalse();
		assertThat(new Export(new Backend(), MultiConnMode.AUTO, List.of(), INLINE).nativeFua()).isFalse();
	}

	@Test
	void aBackendThatNeverBlocksSyncsOnTheCallingThread() throws Exception {
		AtomicInteger handedOff = new AtomicInteger();
		Executor workers = (task) -> {
			handedOff.incrementAndGet();
			task.run();
		};
		Backend nonBlocking = new Backend();
		nonBlocking.blocking = false;
		new Export(nonBlocking, MultiConnMode.AUTO, List.of(), workers).sharedFlush().flush().get(10, TimeUnit.SECONDS);
		assertThat(handedOff).hasValue(0);
		new Export(new Backend(), MultiConnMode.AUTO, List.of(), workers).sharedFlush().flush().get(10, TimeUnit.SECONDS);
		assertThat(handedOff).hasValue(1);
	}

	@Test
	void transmissionFlagsSayWhatTheBackendCanDo() {
		Backend backend = new Backend();
		backend.rotational = true;
		Export export = new Export(backend, MultiConnMode.AUTO, List.of(), INLINE);
		int flags = export.transmissionFlags();
		assertThat(flags).isEqualTo(export.transmissionFlags(false));
		assertThat(flags & NbdProtocol.TFLAG_ROTATIONAL).isNotZero();
		assertThat(flags & NbdProtocol.TFLAG_HAS_FLAGS).isNotZero();
		assertThat(flags & NbdProtocol.TFLAG_SEND_DF).isZero();
		assertThat(export.transmissionFlags(true) & NbdProtocol.TFLAG_SEND_DF).isNotZero();
	}

	/** A connection attached to {@code export} with {@code view}, flushing its own view when nothing is shared. */
	private static NbdConnection attached(Export export, ExportBackend view) {
		NbdConnection connection = new NbdConnection(new EmbeddedChannel(), 1);
		FlushCoordinator own = (export.sharedFlush() == null) ? new FlushCoordinator(export.latched(view::flush), INLINE)
				: null;
		connection.attach(export, view, own);
		return connection;
	}

	/** Reads and writes nothing; counts flushes. Multi-conn safe, blocking and flushable unless told otherwise. */
	private static final class Backend implements ExportBackend {

		final AtomicInteger flushes = new AtomicInteger();

		boolean multiConnSafe = true;

		boolean blocking = true;

		boolean readOnly;

		boolean canFlush = true;

		boolean canFua;

		boolean rotational;

		volatile boolean failFlush;

		@Override
		public String name() {
			return "test";
		}

		@Override
		public long size() {
			return 1 << 20;
		}

		@Override
		public boolean isMultiConnSafe() {
			return this.multiConnSafe;
		}

		@Override
		public boolean isBlocking() {
			return this.blocking;
		}

		@Override
		public boolean isReadOnly() {
			return this.readOnly;
		}

		@Override
		public boolean canFlush() {
			return this.canFlush;
		}

		@Override
		public boolean canFua() {
			return this.canFua;
		}

		@Override
		public boolean isRotational() {
			return this.rotational;
		}

		@Override
		public void read(long offset, ByteBuffer dst) {
			dst.position(dst.limit());
		}

		@Override
		public void write(long offset, ByteBuffer src, boolean fua) {
			src.position(src.limit());
		}

		@Override
		public void flush() throws IOException {
			this.flushes.incrementAndGet();
			if (this.failFlush) {
				throw new IOException("sync failed");
			}
		}

	}

}

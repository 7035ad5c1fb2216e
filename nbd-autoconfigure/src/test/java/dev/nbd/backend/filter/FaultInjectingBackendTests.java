package dev.nbd.backend.filter;

import java.io.IOException;
import java.io.SyncFailedException;
import java.nio.ByteBuffer;
import java.time.Duration;

import org.junit.jupiter.api.Test;

import dev.nbd.backend.BackendErrors;
import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.backend.NbdBackendException;
import dev.nbd.protocol.NbdError;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatExceptionOfType;
import static org.assertj.core.api.Assertions.assertThatIllegalArgumentException;
import static org.assertj.core.api.Assertions.assertThatNoException;

/** The rules of {@link Fault}: which operations, which range, how often, and what happens. */
class FaultInjectingBackendTests {

	private final MemoryBackend memory = new MemoryBackend("mem", 1 << 20);

	@Test
	void anErrorHitsOnlyItsOperationsAndRange() throws Exception {
		FaultInjectingBackend backend = FaultInjectingBackend.builder(this.memory)
			.fault(Fault.error(NbdError.ENOSPC).on(Operation.WRITE, Operation.ZERO).at(8192, 4096))
			.build();
		assertThat(errorOf(() -> backend.write(8192 + 4095, ByteBuffer.allocate(1), false))).isEqualTo(NbdError.ENOSPC);
		assertThat(errorOf(() -> backend.write(4096, ByteBuffer.allocate(4097), false))).isEqualTo(NbdError.ENOSPC);
		assertThat(errorOf(() -> backend.zero(0, 1 << 20, true, false, false))).isEqualTo(NbdError.ENOSPC);
		assertThatNoException().isThrownBy(() -> backend.write(4096, ByteBuffer.allocate(4096), false));
		assertThatNoException().isThrownBy(() -> backend.write(12288, ByteBuffer.allocate(4096), false));
		assertThatNoException().isThrownBy(() -> backend.read(8192, ByteBuffer.allocate(4096)));
		assertThatNoException().isThrownBy(() -> backend.trim(8192, 4096, false));
		// A flush has no range: a fault with one never hits it.
		assertThatNoException().isThrownBy(backend::flush);
	}

	@Test
	void afterAndTimesCountTheOperationsItAppliesTo() throws Exception {
		Fault third = Fault.error(NbdError.EIO).on(Operation.FLUSH).after(2).times(1);
		FaultInjectingBackend backend = FaultInjectingBackend.builder(this.memory).fault(third).build();
		backend.read(0, ByteBuffer.allocate(16));
		backend.flush();
		backend.flush();
		assertThat(errorOf(backend::flush)).isEqualTo(NbdError.EIO);
		backend.flush();
		assertThat(third.matched()).isEqualTo(4);
		assertThat(third.fired()).isOne();
	}

	@Test
	void whatTheWrappedBackendDeclaresShowsThrough() throws Exception {
		dev.nbd.backend.ExportBackend declaring = new dev.nbd.backend.MemoryBackend("declaring", 1 << 20) {

			@Override
			public java.util.Map<String, Object> details() {
				return java.util.Map.of("calls", "fallocate");
			}

		};
		FaultInjectingBackend backend = FaultInjectingBackend.builder(declaring).build();
		assertThat(backend.details()).containsEntry("calls", "fallocate");
		assertThat(backend.size()).isEqualTo(1 << 20);
	}

	@Test
	void aSeededRateIsRepeatable() throws Exception {
		assertThat(failures(7)).isEqualTo(failures(7)).isBetween(150, 350);
	}

	private int failures(long seed) throws Exception {
		Fault fault = Fault.error(NbdError.EIO).on(Operation.READ).rate(0.25);
		FaultInjectingBackend backend = FaultInjectingBackend.builder(this.memory).fault(fault).seed(seed).build();
		StringBuilder pattern = new StringBuilder();
		for (int i = 0; i < 1000; i++) {
			pattern.append((errorOf(() -> backend.read(0, ByteBuffer.allocate(1))) != null) ? 'x' : '.');
		}
		assertThat(fault.fired()).isEqualTo(pattern.chars().filter((c) -> c == 'x').count());
		return (int) fault.fired();
	}

	@Test
	void exceptionsAreThrownAsMade() {
		FaultInjectingBackend backend = FaultInjectingBackend.builder(this.memory)
			.fault(Fault.exception(() -> new IOException("No space left on device")).on(Operation.WRITE))
			.fault(Fault.exception(() -> new OutOfMemoryError("Direct buffer memory")).on(Operation.READ))
			.fault(Fault.exception(() -> new Exception("checked")).on(Operation.CACHE))
			.build();
		assertThatExceptionOfType(IOException.class).isThrownBy(() -> backend.write(0, ByteBuffer.allocate(1), false))
			.withMessage("No space left on device");
		assertThatExceptionOfType(OutOfMemoryError.class).isThrownBy(() -> backend.read(0, ByteBuffer.allocate(1)));
		assertThatExceptionOfType(IOException.class).isThrownBy(() -> backend.cache(0, 1))
			.withCauseInstanceOf(Exception.class);
	}

	@Test
	void aShortReadLeavesTheEndOfTheBufferAsItWas() throws Exception {
		this.memory.write(0, ByteBuffer.wrap(new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 }), false);
		FaultInjectingBackend backend = FaultInjectingBackend.builder(this.memory).fault(Fault.shortRead(3)).build();
		ByteBuffer dst = ByteBuffer.allocate(8);
		dst.put(7, (byte) 99);
		backend.read(0, dst);
		assertThat(dst.position()).isEqualTo(5);
		assertThat(dst.array()).startsWith(1, 2, 3, 4, 5, 0, 0, 99);
	}

	@Test
	void aShortLoanLendsFewerBytesAndReleasesOnce() throws Exception {
		this.memory.write(0, ByteBuffer.allocate(256 << 10).put(0, (byte) 1), false);
		FaultInjectingBackend backend = FaultInjectingBackend.builder(this.memory).fault(Fault.shortRead(4096)).build();
		ExportBackend.Lent lent = backend.lend(0, 128 << 10);
		assertThat(lent).isNotNull();
		long total = 0;
		for (ByteBuffer b : lent.buffers()) {
			total += b.remaining();
		}
		assertThat(total).isEqualTo((128 << 10) - 4096);
		lent.release();
	}

	@Test
	void aFailedSyncFailsFlushesAndFuaWritesAfterTheyRan() throws Exception {
		FaultInjectingBackend backend = FaultInjectingBackend.builder(this.memory).fault(Fault.failedSync()).build();
		assertThatExceptionOfType(SyncFailedException.class).isThrownBy(backend::flush);
		assertThatExceptionOfType(SyncFailedException.class)
			.isThrownBy(() -> backend.write(0, ByteBuffer.wrap(new byte[] { 42 }), true));
		ByteBuffer dst = ByteBuffer.allocate(1);
		this.memory.read(0, dst);
		assertThat(dst.get(0)).isEqualTo((byte) 42);
		assertThatNoException().isThrownBy(() -> backend.write(0, ByteBuffer.allocate(1), false));
	}

	@Test
	void delaysWaitThenRun() throws Exception {
		FaultInjectingBackend backend = FaultInjectingBackend.builder(this.memory)
			.fault(Fault.delay(Duration.ofMillis(50)).on(Operation.FLUSH))
			.build();
		long start = System.nanoTime();
		backend.flush();
		assertThat(System.nanoTime() - start).isGreaterThanOrEqualTo(50_000_000L);
		assertThat(backend.isBlocking()).isTrue();
	}

	@Test
	void faultsComeAndGoWhileItServes() throws Exception {
		FaultInjectingBackend backend = FaultInjectingBackend.builder(this.memory).build();
		Fault full = Fault.error(NbdError.ENOSPC);
		backend.add(full);
		assertThat(errorOf(() -> backend.write(0, ByteBuffer.allocate(1), false))).isEqualTo(NbdError.ENOSPC);
		assertThat(backend.remove(full)).isTrue();
		assertThatNoException().isThrownBy(() -> backend.write(0, ByteBuffer.allocate(1), false));
	}

	@Test
	void capabilitiesAreTheWrappedBackendsButNoServedFile() {
		FaultInjectingBackend backend = FaultInjectingBackend.builder(this.memory).blocking(false).build();
		assertThat(backend.name()).isEqualTo("mem");
		assertThat(backend.canFua()).isTrue();
		assertThat(backend.canExtents()).isTrue();
		assertThat(backend.isMultiConnSafe()).isTrue();
		assertThat(backend.isBlocking()).isFalse();
		assertThat(backend.servedFile()).isNull();
	}

	@Test
	void perConnectionViewsShareTheFaults() throws Exception {
		ExportBackend withViews = new MemoryBackend("views", 1 << 20) {

			@Override
			public ExportBackend connect() {
				return new MemoryBackend("view", 1 << 20);
			}

		};
		Fault fault = Fault.error(NbdError.EIO).on(Operation.WRITE);
		FaultInjectingBackend backend = FaultInjectingBackend.builder(withViews).fault(fault).build();
		ExportBackend view = backend.connect();
		assertThat(view).isNotSameAs(backend).isInstanceOf(FaultInjectingBackend.class);
		assertThat(errorOf(() -> view.write(0, ByteBuffer.allocate(1), false))).isEqualTo(NbdError.EIO);
		assertThat(fault.fired()).isOne();
	}

	@Test
	void badSettingsAreRefused() {
		assertThatIllegalArgumentException().isThrownBy(() -> Fault.error(NbdError.EIO).rate(1.5));
		assertThatIllegalArgumentException().isThrownBy(() -> Fault.error(NbdError.EIO).at(-1, 1));
		assertThatIllegalArgumentException().isThrownBy(() -> Fault.shortRead(0));
		assertThatIllegalArgumentException().isThrownBy(() -> Fault.delay(Duration.ofMillis(-1)));
	}

	@FunctionalInterface
	interface Call {

		void run() throws Exception;

	}

	/** The NBD error a call failed with (as the server maps it), or null. */
	private static NbdError errorOf(Call call) {
		try {
			call.run();
			return null;
		}
		catch (NbdBackendException ex) {
			return ex.error();
		}
		catch (Exception ex) {
			return BackendErrors.errorOf(ex);
		}
	}

}

package dev.nbd.testkit;

import java.nio.ByteBuffer;
import java.util.Arrays;

import org.junit.jupiter.api.Test;
import org.junit.platform.testkit.engine.EngineTestKit;
import org.junit.platform.testkit.engine.Events;

import dev.nbd.backend.ExportBackend;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.platform.engine.discovery.DiscoverySelectors.selectClass;
import static org.junit.platform.testkit.engine.EventConditions.event;
import static org.junit.platform.testkit.engine.EventConditions.finishedWithFailure;
import static org.junit.platform.testkit.engine.EventConditions.test;
import static org.junit.platform.testkit.engine.TestExecutionResultConditions.message;

/**
 * The kit catches a backend whose read leaves the end of the buffer unfilled (it copies at most
 * one 4 KiB page per call, as a loop that forgot to continue would), while the same backend
 * without the bug passes.
 */
class ShortReadBackendTests {

	@Test
	void kitFailsABackendWhoseReadsAreShort() {
		Events tests = run(ShortReadContract.class);
		tests.assertThatEvents()
			.haveAtLeastOne(event(test("readFillsTheBuffer"),
					finishedWithFailure(message((m) -> m.contains("read() must fill every byte")))));
		// and through the real server: libnbd reads back bytes the backend never filled
		if (Libnbd.available()) {
			tests.assertThatEvents()
				.haveAtLeastOne(event(test("servedThroughLibnbd"), finishedWithFailure(message((m) -> m.contains("pread")))));
		}
	}

	@Test
	void kitPassesTheSameBackendWithoutTheBug() {
		Events tests = run(CorrectContract.class);
		assertThat(tests.failed().count()).as(tests.failed().list().toString()).isZero();
		assertThat(tests.succeeded().count()).isGreaterThan(5);
	}

	private static Events run(Class<?> contract) {
		return EngineTestKit.engine("junit-jupiter").selectors(selectClass(contract)).execute().testEvents();
	}

	/** A byte-array backend; {@code shortReads} makes read() copy one page at most. */
	static class ArrayBackend implements ExportBackend {

		private final byte[] data = new byte[4 * 1024 * 1024];

		private final boolean shortReads;

		ArrayBackend(boolean shortReads) {
			this.shortReads = shortReads;
		}

		@Override
		public String name() {
			return "array";
		}

		@Override
		public long size() {
			return this.data.length;
		}

		@Override
		public boolean isMultiConnSafe() {
			return true;
		}

		@Override
		public synchronized void read(long offset, ByteBuffer dst) {
			int length = this.shortReads ? Math.min(dst.remaining(), 4096) : dst.remaining();
			dst.put(Arrays.copyOfRange(this.data, (int) offset, (int) offset + length));
		}

		@Override
		public synchronized void write(long offset, ByteBuffer src, boolean fua) {
			src.get(this.data, (int) offset, src.remaining());
		}

	}

	static class ShortReadContract extends ExportBackendContractTests {

		@Override
		protected ExportBackend createBackend() {
			return new ArrayBackend(true);
		}

	}

	static class CorrectContract extends ExportBackendContractTests {

		@Override
		protected ExportBackend createBackend() {
			return new ArrayBackend(false);
		}

	}

}

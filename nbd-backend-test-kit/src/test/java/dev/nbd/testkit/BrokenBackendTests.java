package dev.nbd.testkit;

import java.nio.ByteBuffer;
import java.util.Arrays;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ConditionEvaluationResult;
import org.junit.jupiter.api.extension.ExecutionCondition;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.ExtensionContext;
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
 * The kit catches broken backends: one whose read leaves the end of the buffer unfilled (it
 * copies at most one 4 KiB page per call, as a loop that forgot to continue would), one whose
 * extents call written data zero; the same backend without the bugs passes.
 */
class BrokenBackendTests {

	@Test
	void kitFailsABackendWhoseReadsAreShort() {
		Events tests = run(ShortReadContract.class);
		assertThat(tests.succeeded().count()).as("the bug is only in read()").isGreaterThan(0);
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
	void kitFailsABackendWhoseExtentsCallDataZero() {
		Events tests = run(ZeroExtentsContract.class);
		tests.assertThatEvents()
			.haveAtLeastOne(event(test("extentsAgreeWithData"),
					finishedWithFailure(message((m) -> m.contains("is reported ZERO but byte")))));
		// served, the server trusts the extents and sends "zero" data as holes: libnbd reads zeroes
		if (Libnbd.available()) {
			tests.assertThatEvents()
				.haveAtLeastOne(event(test("servedThroughLibnbd"),
						finishedWithFailure(message((m) -> m.contains("differs from what was written")))));
		}
	}

	@Test
	void kitPassesTheSameBackendWithoutTheBug() {
		Events tests = run(CorrectContract.class);
		assertThat(tests.failed().count()).as(tests.failed().list().toString()).isZero();
		assertThat(tests.succeeded().count()).isGreaterThan(5);
	}

	private static Events run(Class<?> contract) {
		return EngineTestKit.engine("junit-jupiter")
			.selectors(selectClass(contract))
			.configurationParameter(RUN_BROKEN, "true")
			.execute()
			.testEvents();
	}

	private static final String RUN_BROKEN = "dev.nbd.testkit.run-broken-backends";

	/** Runs the contracts below only from this class, never picked up by a test run by themselves. */
	static class OnlyFromBrokenBackendTests implements ExecutionCondition {

		@Override
		public ConditionEvaluationResult evaluateExecutionCondition(ExtensionContext context) {
			return context.getConfigurationParameter(RUN_BROKEN).isPresent()
					? ConditionEvaluationResult.enabled("run by BrokenBackendTests")
					: ConditionEvaluationResult.disabled("a deliberately broken backend, run by BrokenBackendTests");
		}

	}

	/**
	 * A byte-array backend; {@code shortReads} makes read() copy one page at most,
	 * {@code zeroExtents} declares extents that report everything as a zero hole.
	 */
	static class ArrayBackend implements ExportBackend {

		private final byte[] data = new byte[4 * 1024 * 1024];

		private final boolean shortReads;

		private final boolean zeroExtents;

		ArrayBackend(boolean shortReads, boolean zeroExtents) {
			this.shortReads = shortReads;
			this.zeroExtents = zeroExtents;
		}

		@Override
		public boolean canExtents() {
			return this.zeroExtents;
		}

		@Override
		public void extents(long offset, long length, ExtentSink sink) {
			sink.extent(length, this.zeroExtents ? HOLE | ZERO : 0);
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

	@ExtendWith(OnlyFromBrokenBackendTests.class)
	static class ShortReadContract extends ExportBackendContractTests {

		@Override
		protected ExportBackend createBackend() {
			return new ArrayBackend(true, false);
		}

	}

	@ExtendWith(OnlyFromBrokenBackendTests.class)
	static class ZeroExtentsContract extends ExportBackendContractTests {

		@Override
		protected ExportBackend createBackend() {
			return new ArrayBackend(false, true);
		}

	}

	@ExtendWith(OnlyFromBrokenBackendTests.class)
	static class CorrectContract extends ExportBackendContractTests {

		@Override
		protected ExportBackend createBackend() {
			return new ArrayBackend(false, false);
		}

	}

}

package dev.nbd.testsupport;

import java.time.Duration;

import io.netty.buffer.PooledByteBufAllocator;
import io.netty.util.ResourceLeakDetector;
import org.awaitility.Awaitility;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtensionContext;

import static org.assertj.core.api.Assertions.assertThatExceptionOfType;
import static org.assertj.core.api.Assertions.assertThatNoException;
import static org.mockito.BDDMockito.given;
import static org.mockito.Mockito.mock;

/** A buffer that is never released fails the class it leaked in. */
class NettyLeakCheckTests {

	private final NettyLeakCheck check = new NettyLeakCheck();

	@Test
	void aLeakedBufferFailsTheClass() {
		ExtensionContext context = mock(ExtensionContext.class);
		given(context.getDisplayName()).willReturn("LeakingTests");
		// As the build runs tests (every buffer tracked), also when run alone from an IDE.
		ResourceLeakDetector.setLevel(ResourceLeakDetector.Level.PARANOID);
		assertThatNoException().isThrownBy(() -> this.check.afterAll(context));
		leakOneBuffer();
		// Reported once the garbage collector found it: the check collects on each call.
		Awaitility.await()
			.atMost(Duration.ofMinutes(1))
			.untilAsserted(() -> assertThatExceptionOfType(AssertionError.class)
				.isThrownBy(() -> this.check.afterAll(context))
				.withMessageContaining("leaked buffer(s) during LeakingTests")
				.withMessageContaining("leakOneBuffer"));
		assertThatNoException().isThrownBy(() -> this.check.afterAll(context));
	}

	private static void leakOneBuffer() {
		PooledByteBufAllocator.DEFAULT.directBuffer(64).writeLong(42);
	}

}

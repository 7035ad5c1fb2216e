package dev.nbd.testsupport;

import java.util.Map;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

/** Every CI counts as CI: a CI that sets {@code CI=1}, or only its own variable, must not skip. */
class ExternalToolTests {

	@Test
	void ciIsAnyTrueLikeValueOfCi() {
		assertThat(ExternalTool.inCi(Map.of("CI", "true"))).isTrue();
		assertThat(ExternalTool.inCi(Map.of("CI", "TRUE"))).isTrue();
		assertThat(ExternalTool.inCi(Map.of("CI", "1"))).isTrue();
		assertThat(ExternalTool.inCi(Map.of("CI", "yes"))).isTrue();
		assertThat(ExternalTool.inCi(Map.of("CI", "woodpecker"))).isTrue();
	}

	@Test
	void ciSystemsThatSetOnlyTheirOwnVariableAreCi() {
		assertThat(ExternalTool.inCi(Map.of("GITHUB_ACTIONS", "true"))).isTrue();
		assertThat(ExternalTool.inCi(Map.of("JENKINS_URL", "http://jenkins/"))).isTrue();
		assertThat(ExternalTool.inCi(Map.of("TF_BUILD", "True"))).isTrue();
	}

	@Test
	void aDeveloperMachineIsNotCi() {
		assertThat(ExternalTool.inCi(Map.of())).isFalse();
		assertThat(ExternalTool.inCi(Map.of("CI", ""))).isFalse();
		assertThat(ExternalTool.inCi(Map.of("CI", "false"))).isFalse();
		assertThat(ExternalTool.inCi(Map.of("CI", "0"))).isFalse();
	}

}

package cri

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestShimPIDIsTheParent(t *testing.T) {
	pid, err := ShimPID(os.Getpid())
	require.NoError(t, err)
	assert.Equal(t, os.Getppid(), pid)

	_, err = ShimPID(-1)
	assert.Error(t, err)
}
